//! The Locks and Elections services (locks.proto): validate, write or forward, wait for the grant
//! when queued, convert. Watches follow the coordination event ring like the other streams.

use std::time::Duration;

use conclave_proto::v1 as pb;
use conclave_proto::v1::elections_client::ElectionsClient;
use conclave_proto::v1::elections_server::Elections;
use conclave_proto::v1::locks_client::LocksClient;
use conclave_proto::v1::locks_server::Locks as LocksApi;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::feed::{self, FeedSource, Read, Wake};
use super::gateway::{
    bounded_page, check_request_size, invalid, read_consistency, request_id, Gateway,
};
use super::status::to_status;
use super::streams::{stopped, EventStream};
use super::validation::{self, max_bytes, name};
use crate::error::Error;
use crate::limits::{
    DEFAULT_LOCK_DELAY_MS, MAX_ELECTION_VALUE_BYTES, MAX_LOCK_DELAY_MS, MAX_LOCK_TTL_MS,
    MAX_LOCK_WAIT_MS, MAX_REQUEST_BYTES, MAX_SEMAPHORE_LIMIT, MAX_SHORT_STRING_BYTES,
    MIN_LOCK_TTL_MS,
};
use crate::node::Consistency;
use crate::state_machine::coordination::CoordEventKind;
use crate::state_machine::locks::{
    Grant, Holder, Lock, LockCommand, LockEventKind, LockKind, LockResponse, Token,
};
use crate::state_machine::{Command, Response as SmResponse, StateMachine};

pub struct LocksService {
    gateway: Gateway,
}

pub struct ElectionsService {
    gateway: Gateway,
}

impl LocksService {
    pub fn new(gateway: Gateway) -> Self {
        LocksService { gateway }
    }
}

impl ElectionsService {
    pub fn new(gateway: Gateway) -> Self {
        ElectionsService { gateway }
    }
}

fn locks_client(channel: Channel) -> LocksClient<Channel> {
    LocksClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

fn elections_client(channel: Channel) -> ElectionsClient<Channel> {
    ElectionsClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

// --- validation ---------------------------------------------------------------------------------

/// Any kind: KeepAlive serves election leases too.
fn any_kind(kind: i32) -> Result<LockKind, Status> {
    match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::Election) => Ok(LockKind::Election),
        _ => lock_kind(kind),
    }
}

/// LOCK or SEMAPHORE: the kinds the Locks service takes.
fn lock_kind(kind: i32) -> Result<LockKind, Status> {
    match pb::LockKind::try_from(kind) {
        Ok(pb::LockKind::Lock) => Ok(LockKind::Lock),
        Ok(pb::LockKind::Semaphore) => Ok(LockKind::Semaphore),
        Ok(pb::LockKind::Election) => {
            Err(invalid("kind: ELECTION is served by the Elections service"))
        }
        Err(_) => Err(invalid(format!("kind: unknown value {kind}"))),
    }
}

pub fn kind_to_pb(kind: LockKind) -> pb::LockKind {
    match kind {
        LockKind::Lock => pb::LockKind::Lock,
        LockKind::Semaphore => pb::LockKind::Semaphore,
        LockKind::Election => pb::LockKind::Election,
    }
}

fn holder(holder: Option<&pb::Holder>) -> Result<Holder, Status> {
    let holder = holder.ok_or_else(|| invalid("holder: required (a session_id or a ttl_ms)"))?;
    max_bytes(
        "holder.owner",
        holder.owner.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    if holder.session_id != 0 {
        if holder.ttl_ms != 0 {
            return Err(invalid("holder: give a session_id or a ttl_ms, not both"));
        }
    } else if !(MIN_LOCK_TTL_MS..=MAX_LOCK_TTL_MS).contains(&holder.ttl_ms) {
        return Err(invalid(format!(
            "holder.ttl_ms: {} is outside {MIN_LOCK_TTL_MS} ..= {MAX_LOCK_TTL_MS} \
             (MIN_LOCK_TTL_MS, MAX_LOCK_TTL_MS); or give a session_id",
            holder.ttl_ms
        )));
    }
    Ok(Holder {
        session_id: holder.session_id,
        ttl_ms: if holder.session_id != 0 {
            0
        } else {
            holder.ttl_ms
        },
        owner: holder.owner.clone(),
    })
}

fn wait_ms(field: &str, wait_ms: u64) -> Result<u64, Status> {
    if wait_ms > MAX_LOCK_WAIT_MS {
        return Err(invalid(format!(
            "{field}: {wait_ms} exceeds the limit of {MAX_LOCK_WAIT_MS} (MAX_LOCK_WAIT_MS)"
        )));
    }
    Ok(wait_ms)
}

fn lock_delay(delay: Option<u64>) -> Result<u64, Status> {
    let delay = delay.unwrap_or(DEFAULT_LOCK_DELAY_MS);
    if delay > MAX_LOCK_DELAY_MS {
        return Err(invalid(format!(
            "lock_delay_ms: {delay} exceeds the limit of {MAX_LOCK_DELAY_MS} (MAX_LOCK_DELAY_MS)"
        )));
    }
    Ok(delay)
}

/// (permits, limit) of a lock (1, 1) or a semaphore.
fn permits(kind: LockKind, permits: u32, limit: u32) -> Result<(u32, u32), Status> {
    if kind != LockKind::Semaphore {
        if permits > 1 || limit > 1 {
            return Err(invalid("permits, limit: a lock has one permit (0 or 1)"));
        }
        return Ok((1, 1));
    }
    if !(1..=MAX_SEMAPHORE_LIMIT).contains(&limit) {
        return Err(invalid(format!(
            "limit: {limit} is outside 1 ..= {MAX_SEMAPHORE_LIMIT} (MAX_SEMAPHORE_LIMIT)"
        )));
    }
    let permits = permits.max(1);
    if permits > limit {
        return Err(invalid(format!(
            "permits: {permits} is more than the semaphore's limit of {limit}"
        )));
    }
    Ok((permits, limit))
}

fn token(token: u64) -> Result<u64, Status> {
    if token == 0 {
        return Err(invalid("token: must be the non-zero token of the grant"));
    }
    Ok(token)
}

fn election_value(value: &[u8]) -> Result<(), Status> {
    max_bytes(
        "value",
        value,
        MAX_ELECTION_VALUE_BYTES,
        "MAX_ELECTION_VALUE_BYTES",
    )
}

// --- outcomes and conversion --------------------------------------------------------------------

/// A lock write's success (refusals are already errors: `error::refused`).
fn outcome(response: SmResponse) -> Result<(u64, LockResponse), Error> {
    match response {
        SmResponse::Locks { revision, response } => Ok((revision, response)),
        other => Err(Error::Fatal(format!(
            "a lock command was answered {other:?}"
        ))),
    }
}

/// The answer to a lock write for [`Gateway::write_or_forward`], made by `answer` from the store
/// revision and the (successful) lock response, as `gateway::coordination` does for coordination.
fn answered<Resp>(
    answer: impl FnOnce(u64, LockResponse) -> Result<Response<Resp>, Status>,
) -> impl FnOnce(SmResponse) -> Result<Response<Resp>, Status> {
    move |response| {
        let (revision, response) = outcome(response).map_err(to_status)?;
        answer(revision, response)
    }
}

fn grant_to_pb(grant: &Grant) -> pb::Grant {
    pb::Grant {
        token: grant.token,
        holder: Some(pb::Holder {
            session_id: grant.holder.session_id,
            ttl_ms: grant.holder.ttl_ms,
            owner: grant.holder.owner.clone(),
        }),
        permits: grant.permits,
        expires_at_ms: grant.expires_at_ms,
        since_ms: grant.since_ms,
        value: grant.value.clone(),
    }
}

pub fn lock_to_pb(lock: &Lock) -> pb::Lock {
    pb::Lock {
        kind: kind_to_pb(lock.kind) as i32,
        name: lock.name.clone(),
        limit: lock.limit,
        holders: lock.holders.values().map(grant_to_pb).collect(),
        waiters: lock.waiters.values().map(grant_to_pb).collect(),
        lock_delay_ms: lock.lock_delay_ms,
        unavailable_until_ms: lock.unavailable_until_ms,
        last_token: lock.last_token,
    }
}

fn not_found(kind: LockKind, name: &str) -> Status {
    to_status(Error::NotFound(format!(
        "{} {name:?} is not held or waited for",
        kind.noun()
    )))
}

// --- acquiring ----------------------------------------------------------------------------------

/// What an acquire or campaign came to: granted or not, its token, and the lock as it stands.
struct Acquired {
    revision: u64,
    granted: bool,
    token: Token,
    expires_at_ms: u64,
    lock: Option<pb::Lock>,
}

/// Proposes an Acquire and, when it was queued, waits for the grant until `wait_ms` has passed.
/// A wait that ends here without a grant gives the place up (a Release of its token), so no grant
/// is left behind for a caller that has gone.
async fn acquire_and_wait(
    gateway: &Gateway,
    request_id: crate::state_machine::RequestId,
    command: LockCommand,
) -> Result<Acquired, Error> {
    let (kind, name, wait_ms) = match &command {
        LockCommand::Acquire {
            kind,
            name,
            wait_ms,
            ..
        } => (*kind, name.clone(), *wait_ms),
        other => unreachable!("acquire_and_wait takes an Acquire, not {other:?}"),
    };
    let started = Instant::now();
    let (revision, response) = outcome(gateway.write(request_id, Command::Locks(command)).await?)?;
    let (token, granted, expires_at_ms) = match response {
        LockResponse::Acquired {
            token,
            granted,
            expires_at_ms,
        } => (token, granted, expires_at_ms),
        LockResponse::Busy => (0, false, 0),
        other => return Err(Error::Fatal(format!("unexpected lock response {other:?}"))),
    };
    let mut acquired = Acquired {
        revision,
        granted,
        token,
        expires_at_ms,
        lock: None,
    };
    if token != 0 && !granted {
        let guard = GiveUp::new(gateway, kind, &name, token);
        let until = started + Duration::from_millis(wait_ms);
        if let Some(expires_at_ms) = wait_for_grant(gateway, kind, &name, token, until).await {
            acquired.granted = true;
            acquired.expires_at_ms = expires_at_ms;
            guard.disarm();
        }
    }
    let state = gateway.node.state.read();
    acquired.lock = state.machine.locks().get(kind, &name).map(lock_to_pb);
    Ok(acquired)
}

/// Waits until `token` holds the lock (its expiry) or no longer waits for it (None), or `until`.
async fn wait_for_grant(
    gateway: &Gateway,
    kind: LockKind,
    name: &str,
    token: Token,
    until: Instant,
) -> Option<u64> {
    let mut events = gateway.node.state.subscribe_events();
    let mut stopping = gateway.stopping.clone();
    loop {
        events.borrow_and_update();
        {
            let state = gateway.node.state.read();
            let lock = state.machine.locks().get(kind, name)?;
            if let Some(grant) = lock.holders.get(&token) {
                return Some(grant.expires_at_ms);
            }
            if !lock.waiters.contains_key(&token) {
                return None;
            }
        }
        tokio::select! {
            changed = events.changed() => if changed.is_err() { return None },
            () = tokio::time::sleep_until(until) => return None,
            () = stopped(&mut stopping) => return None,
        }
    }
}

/// Releases a queued token unless disarmed: a caller that stopped waiting (its wait ran out here,
/// or it went away) leaves no grant behind.
struct GiveUp {
    gateway: Gateway,
    kind: LockKind,
    name: String,
    token: Token,
    armed: bool,
}

impl GiveUp {
    fn new(gateway: &Gateway, kind: LockKind, name: &str, token: Token) -> Self {
        GiveUp {
            gateway: gateway.clone(),
            kind,
            name: name.to_string(),
            token,
            armed: true,
        }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let node = self.gateway.node.clone();
        let command = Command::Locks(LockCommand::Release {
            kind: self.kind,
            name: std::mem::take(&mut self.name),
            token: self.token,
        });
        tokio::spawn(async move {
            // Only the leader can propose; elsewhere the waiter ends at its own deadline.
            if let Err(e) = node.propose_internal(command).await {
                tracing::debug!(error = %e, "giving up a lock wait was not proposed");
            }
        });
    }
}

/// The forwarded call's deadline covers the wait.
fn with_wait<T>(mut request: Request<T>, gateway: &Gateway, wait_ms: u64) -> Request<T> {
    request.set_timeout(gateway.node.leader_wait() * 2 + Duration::from_millis(wait_ms));
    request
}

// --- the Locks service --------------------------------------------------------------------------

#[tonic::async_trait]
impl LocksApi for LocksService {
    async fn acquire(
        &self,
        request: Request<pb::AcquireRequest>,
    ) -> Result<Response<pb::AcquireResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let kind = lock_kind(req.kind)?;
        name("name", &req.name)?;
        let (permits, limit) = permits(kind, req.permits, req.limit)?;
        let command = LockCommand::Acquire {
            kind,
            name: req.name.clone(),
            holder: holder(req.holder.as_ref())?,
            permits,
            limit,
            wait_ms: wait_ms("wait_ms", req.wait_ms)?,
            lock_delay_ms: lock_delay(req.lock_delay_ms)?,
            value: Vec::new(),
        };
        match acquire_and_wait(&self.gateway, request_id, command).await {
            Ok(acquired) => Ok(Response::new(pb::AcquireResponse {
                header: self
                    .gateway
                    .header(acquired.revision, Consistency::Linearizable),
                acquired: acquired.granted,
                token: acquired.token,
                expires_at_ms: acquired.expires_at_ms,
                lock: acquired.lock,
            })),
            Err(e) => {
                let wait = req.wait_ms;
                let gateway = self.gateway.clone();
                self.gateway
                    .forward(e, forwarded, req, |c, r| async move {
                        locks_client(c).acquire(with_wait(r, &gateway, wait)).await
                    })
                    .await
            }
        }
    }

    async fn release(
        &self,
        request: Request<pb::ReleaseLockRequest>,
    ) -> Result<Response<pb::ReleaseLockResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        let kind = lock_kind(req.kind)?;
        name("name", &req.name)?;
        let token = token(req.token)?;
        let command = Command::Locks(LockCommand::Release {
            kind,
            name: req.name.clone(),
            token,
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                answered(|revision, _| {
                    Ok(Response::new(pb::ReleaseLockResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                    }))
                }),
                |c, r| async move { locks_client(c).release(r).await },
            )
            .await
    }

    async fn keep_alive(
        &self,
        request: Request<pb::KeepAliveRequest>,
    ) -> Result<Response<pb::KeepAliveResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        let kind = any_kind(req.kind)?;
        name("name", &req.name)?;
        let token = token(req.token)?;
        let command = Command::Locks(LockCommand::KeepAlive {
            kind,
            name: req.name.clone(),
            token,
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                answered(|revision, response| match response {
                    LockResponse::KeptAlive { expires_at_ms } => {
                        Ok(Response::new(pb::KeepAliveResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            expires_at_ms,
                        }))
                    }
                    other => Err(Status::internal(format!("unexpected {other:?}"))),
                }),
                |c, r| async move { locks_client(c).keep_alive(r).await },
            )
            .await
    }

    async fn get_lock(
        &self,
        request: Request<pb::GetLockRequest>,
    ) -> Result<Response<pb::GetLockResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let kind = lock_kind(req.kind)?;
        name("name", &req.name)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    locks_client(c).get_lock(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let lock = state
            .machine
            .locks()
            .get(kind, &req.name)
            .ok_or_else(|| not_found(kind, &req.name))?;
        Ok(Response::new(pb::GetLockResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            lock: Some(lock_to_pb(lock)),
        }))
    }

    async fn list_locks(
        &self,
        request: Request<pb::ListLocksRequest>,
    ) -> Result<Response<pb::ListLocksResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let kind = lock_kind(req.kind)?;
        validation::optional_name("after", &req.after)?;
        let limit = validation::page_limit(req.limit)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    locks_client(c).list_locks(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let (locks, more) = state.machine.locks().list(kind, &req.after, limit);
        let (locks, more) = bounded_page(locks.into_iter().map(lock_to_pb), more);
        Ok(Response::new(pb::ListLocksResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            locks,
            more,
        }))
    }

    type WatchLockStream = EventStream<pb::LockEvent>;

    async fn watch_lock(
        &self,
        request: Request<pb::WatchLockRequest>,
    ) -> Result<Response<Self::WatchLockStream>, Status> {
        let req = request.into_inner();
        let kind = lock_kind(req.kind)?;
        name("name", &req.name)?;
        Ok(Response::new(watch(&self.gateway, kind, req.name)?))
    }
}

// --- the Elections service ----------------------------------------------------------------------

#[tonic::async_trait]
impl Elections for ElectionsService {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        name("election", &req.election)?;
        election_value(&req.value)?;
        let command = LockCommand::Acquire {
            kind: LockKind::Election,
            name: req.election.clone(),
            holder: holder(req.holder.as_ref())?,
            permits: 1,
            limit: 1,
            wait_ms: wait_ms("wait_ms", req.wait_ms)?,
            lock_delay_ms: lock_delay(req.lock_delay_ms)?,
            value: req.value.clone(),
        };
        match acquire_and_wait(&self.gateway, request_id, command).await {
            Ok(acquired) => Ok(Response::new(pb::CampaignResponse {
                header: self
                    .gateway
                    .header(acquired.revision, Consistency::Linearizable),
                elected: acquired.granted,
                token: acquired.token,
                expires_at_ms: acquired.expires_at_ms,
                election: acquired.lock,
            })),
            Err(e) => {
                let wait = req.wait_ms;
                let gateway = self.gateway.clone();
                self.gateway
                    .forward(e, forwarded, req, |c, r| async move {
                        elections_client(c)
                            .campaign(with_wait(r, &gateway, wait))
                            .await
                    })
                    .await
            }
        }
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        name("election", &req.election)?;
        election_value(&req.value)?;
        let command = Command::Locks(LockCommand::Proclaim {
            name: req.election.clone(),
            token: token(req.token)?,
            value: req.value.clone(),
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                answered(|revision, _| {
                    Ok(Response::new(pb::ProclaimResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                    }))
                }),
                |c, r| async move { elections_client(c).proclaim(r).await },
            )
            .await
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        name("election", &req.election)?;
        let command = Command::Locks(LockCommand::Release {
            kind: LockKind::Election,
            name: req.election.clone(),
            token: token(req.token)?,
        });
        self.gateway
            .write_or_forward(
                forwarded,
                req,
                request_id,
                command,
                answered(|revision, _| {
                    Ok(Response::new(pb::ResignResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                    }))
                }),
                |c, r| async move { elections_client(c).resign(r).await },
            )
            .await
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        name("election", &req.election)?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(e, forwarded, req, |c, r| async move {
                    elections_client(c).leader(r).await
                })
                .await;
        }
        let state = self.gateway.node.state.read();
        let election = state
            .machine
            .locks()
            .get(LockKind::Election, &req.election)
            .ok_or_else(|| not_found(LockKind::Election, &req.election))?;
        Ok(Response::new(pb::LeaderResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            leader: election.leader().map(grant_to_pb),
            election: Some(lock_to_pb(election)),
        }))
    }

    type ObserveStream = EventStream<pb::LockEvent>;

    async fn observe(
        &self,
        request: Request<pb::ObserveRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        let req = request.into_inner();
        name("election", &req.election)?;
        Ok(Response::new(watch(
            &self.gateway,
            LockKind::Election,
            req.election,
        )?))
    }
}

// --- watches ------------------------------------------------------------------------------------

fn event_kind_to_pb(kind: LockEventKind) -> pb::lock_event::Kind {
    use pb::lock_event::Kind;
    match kind {
        LockEventKind::Granted => Kind::Granted,
        LockEventKind::Released => Kind::Released,
        LockEventKind::Lost => Kind::Lost,
        LockEventKind::Queued => Kind::Queued,
        LockEventKind::WaitEnded => Kind::WaitEnded,
        LockEventKind::Proclaimed => Kind::Proclaimed,
        LockEventKind::DelayEnded => Kind::DelayEnded,
    }
}

/// WatchLock and Observe: CURRENT, then one message per event of this lock, each with the lock
/// as this node has it when the message is built. Served from this node's applied state.
fn watch(
    gateway: &Gateway,
    kind: LockKind,
    name: String,
) -> Result<EventStream<pb::LockEvent>, Status> {
    let permit = gateway.watch_slot()?;
    feed::serve(gateway, permit, LockFeed { kind, name })
}

/// The feed of a lock watch: the lock's events of the ring; CURRENT at the start and again after
/// falling behind the ring (a state watch: it does not resume, and has no bookmarks).
struct LockFeed {
    kind: LockKind,
    name: String,
}

impl LockFeed {
    fn current(&self, machine: &StateMachine) -> (u64, pb::LockEvent) {
        let sequence = machine.last_event_seq();
        let current = pb::LockEvent {
            kind: pb::lock_event::Kind::Current as i32,
            token: 0,
            reason: String::new(),
            lock: machine.locks().get(self.kind, &self.name).map(lock_to_pb),
            sequence,
        };
        (sequence, current)
    }
}

impl FeedSource for LockFeed {
    type Message = pb::LockEvent;
    const WAKE: Wake = Wake::Events;

    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<pb::LockEvent>), Status> {
        let (cursor, current) = self.current(machine);
        Ok((cursor, vec![current]))
    }

    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<pb::LockEvent>,
    ) -> Result<Read, Status> {
        let lock = machine.locks().get(self.kind, &self.name).map(lock_to_pb);
        let read = feed::ring_read(machine, cursor, |e| {
            if let CoordEventKind::Lock(l) = &e.kind {
                if l.lock == self.kind && l.name == self.name {
                    out.push(pb::LockEvent {
                        kind: event_kind_to_pb(l.kind) as i32,
                        token: l.token,
                        reason: l.reason.clone(),
                        lock: lock.clone(),
                        sequence: e.seq,
                    });
                }
            }
            false
        });
        Ok(read.unwrap_or_else(|_| {
            let (cursor, current) = self.current(machine);
            out.push(current);
            Read {
                cursor,
                caught_up: true,
                ended: false,
            }
        }))
    }

    fn bookmark(&self, _cursor: u64) -> Option<pb::LockEvent> {
        None
    }

    fn cursor_of(message: &pb::LockEvent) -> u64 {
        message.sequence
    }
}
