//! The KV service: validate, convert, call the node, map the error. Writes and linearizable reads
//! that reach a follower are forwarded to the leader.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use conclave_proto::v1 as pb;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::kv_server::Kv;
use futures::Stream;
use prost::Message;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::forward::{check_forwarder, is_forwarded, Forwarder};
use super::progress::{self, Progress};
use super::status::to_status;
use crate::error::Error;
use crate::limits::*;
use crate::node::{Consistency, Node};
use crate::state_machine::{Command, Compare, EventKind, KeyValue, RequestId, TxnOp};

pub struct KvService {
    node: Arc<Node>,
    forwarder: Forwarder,
    watch_slots: Arc<Semaphore>,
    write_slots: Arc<Semaphore>,
    /// Becomes true when the node stops; open watches end then.
    stopping: watch::Receiver<bool>,
}

impl KvService {
    /// `write_slots` bounds the writes in flight on this node, shared with the other services.
    pub fn new(
        node: Arc<Node>,
        forwarder: Forwarder,
        write_slots: Arc<Semaphore>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        KvService {
            node,
            forwarder,
            watch_slots: Arc::new(Semaphore::new(WATCH_STREAMS_MAX)),
            write_slots,
            stopping,
        }
    }

    fn header(&self, revision: u64, consistency: Consistency) -> Option<pb::ResponseHeader> {
        Some(pb::ResponseHeader {
            revision,
            node_id: self.node.id,
            raft_term: self.node.term(),
            consistency: match consistency {
                Consistency::Linearizable => pb::ReadConsistency::Linearizable,
                Consistency::Serializable => pb::ReadConsistency::Serializable,
            } as i32,
        })
    }

    /// Proposes a write here if this node leads; otherwise hands back the leader to forward to.
    async fn write(
        &self,
        request_id: RequestId,
        fence: Option<crate::state_machine::Fence>,
        command: Command,
    ) -> Result<crate::state_machine::Response, Error> {
        let _slot = self.write_slots.try_acquire().map_err(|_| {
            Error::ResourceExhausted(format!(
                "this node already has {MAX_INFLIGHT_WRITES} writes in flight (MAX_INFLIGHT_WRITES); retry later"
            ))
        })?;
        let node = &self.node;
        super::forward::until_leader(node, || {
            node.write_fenced(request_id, fence.clone(), command.clone())
        })
        .await
    }

    /// Makes local reads linearizable, or hands back the leader to forward to.
    async fn linearize(&self) -> Result<(), Error> {
        let node = &self.node;
        super::forward::until_leader(node, || node.linearize()).await
    }

    /// Forwards the request to the leader unless it was already forwarded once.
    async fn forward<Req, Resp, F, Fut>(
        &self,
        error: Error,
        forwarded: bool,
        request: Req,
        call: F,
    ) -> Result<Response<Resp>, Status>
    where
        F: FnOnce(KvClient<Channel>, Request<Req>) -> Fut,
        Fut: Future<Output = Result<Response<Resp>, Status>>,
    {
        self.forwarder
            .forward(&self.node, error, forwarded, request, |channel, request| {
                let client = KvClient::new(channel)
                    .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                    .max_encoding_message_size(2 * MAX_REQUEST_BYTES);
                call(client, request)
            })
            .await
    }

    /// Unwraps a request after the checks every handler shares: whether another node forwarded
    /// it, and if so whether that node is still a member.
    fn accept<T>(&self, request: Request<T>) -> Result<(bool, T), Status> {
        let forwarded = is_forwarded(&request);
        check_forwarder(&self.node, &request).map_err(to_status)?;
        Ok((forwarded, request.into_inner()))
    }

    /// Test-only unsafe mode: skip ReadIndex and answer from the local state.
    fn stale_reads(&self) -> bool {
        self.node.config.unsafe_test_mode == crate::config::UnsafeTestMode::StaleReads
    }

    fn read_consistency(&self, consistency: i32) -> Result<Consistency, Status> {
        match pb::ReadConsistency::try_from(consistency) {
            Ok(pb::ReadConsistency::Linearizable) => Ok(Consistency::Linearizable),
            Ok(pb::ReadConsistency::Serializable) => Ok(Consistency::Serializable),
            Err(_) => Err(invalid(format!("consistency: unknown value {consistency}"))),
        }
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (forwarded, req) = self.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        check_key("key", &req.key)?;
        check_value("value", &req.value)?;
        let command = Command::Put {
            key: req.key.clone(),
            value: req.value.clone(),
            session_id: req.session_id,
        };
        match self.write(request_id, fence, command).await {
            Ok(crate::state_machine::Response::Put { revision, previous }) => {
                Ok(Response::new(pb::PutResponse {
                    header: self.header(revision, Consistency::Linearizable),
                    previous: previous.map(to_pb),
                }))
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                self.forward(e, forwarded, req, |mut c, r| async move { c.put(r).await })
                    .await
            }
        }
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let (forwarded, req) = self.accept(request)?;
        check_key("key", &req.key)?;
        let consistency = self.read_consistency(req.consistency)?;
        if consistency == Consistency::Linearizable && !self.stale_reads() {
            if let Err(e) = self.linearize().await {
                return self
                    .forward(e, forwarded, req, |mut c, r| async move { c.get(r).await })
                    .await;
            }
        }
        let state = self.node.state.read();
        Ok(Response::new(pb::GetResponse {
            header: self.header(state.machine.revision(), consistency),
            kv: state.machine.get(&req.key).map(to_pb),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (forwarded, req) = self.accept(request)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        check_key("key", &req.key)?;
        let command = Command::Delete {
            key: req.key.clone(),
        };
        match self.write(request_id, fence, command).await {
            Ok(crate::state_machine::Response::Delete { revision, previous }) => {
                Ok(Response::new(pb::DeleteResponse {
                    header: self.header(revision, Consistency::Linearizable),
                    deleted: previous.is_some(),
                    previous: previous.map(to_pb),
                }))
            }
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                self.forward(
                    e,
                    forwarded,
                    req,
                    |mut c, r| async move { c.delete(r).await },
                )
                .await
            }
        }
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (forwarded, req) = self.accept(request)?;
        if req.prefix.len() > MAX_KEY_BYTES {
            return Err(invalid(format!("prefix: {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)", req.prefix.len())));
        }
        if req.start_after.len() > MAX_KEY_BYTES {
            return Err(invalid(format!("start_after: {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)", req.start_after.len())));
        }
        if req.limit > MAX_LIST_LIMIT {
            return Err(invalid(format!(
                "limit: {} is above the maximum page of {MAX_LIST_LIMIT} keys (MAX_LIST_LIMIT)",
                req.limit
            )));
        }
        let consistency = self.read_consistency(req.consistency)?;
        if consistency == Consistency::Linearizable && !self.stale_reads() {
            if let Err(e) = self.linearize().await {
                return self
                    .forward(e, forwarded, req, |mut c, r| async move { c.list(r).await })
                    .await;
            }
        }
        let limit = if req.limit == 0 {
            MAX_LIST_LIMIT
        } else {
            req.limit
        } as usize;
        let state = self.node.state.read();
        let (page, more) = state.machine.list(&req.prefix, &req.start_after, limit);
        let next_start_after = if more {
            page.last().map(|kv| kv.key.clone()).unwrap_or_default()
        } else {
            Vec::new()
        };
        let kvs = page
            .into_iter()
            .map(|kv| {
                if req.keys_only {
                    kv.without_value()
                } else {
                    kv
                }
            })
            .map(to_pb)
            .collect();
        Ok(Response::new(pb::ListResponse {
            header: self.header(state.machine.revision(), consistency),
            kvs,
            more,
            next_start_after,
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let (forwarded, req) = self.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        check_key("key", &req.key)?;
        check_value("value", &req.value)?;
        let command = Command::CompareAndSwap {
            key: req.key.clone(),
            expected_mod_revision: req.expected_mod_revision,
            value: (!req.delete).then(|| req.value.clone()),
        };
        match self.write(request_id, fence, command).await {
            Ok(crate::state_machine::Response::CompareAndSwap {
                revision,
                succeeded,
                current,
            }) => Ok(Response::new(pb::CompareAndSwapResponse {
                header: self.header(revision, Consistency::Linearizable),
                succeeded,
                current: current.map(to_pb),
            })),
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                self.forward(e, forwarded, req, |mut c, r| async move {
                    c.compare_and_swap(r).await
                })
                .await
            }
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let (forwarded, req) = self.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        let (compares, ops) = txn_command(&req)?;
        match self
            .write(request_id, fence, Command::Txn { compares, ops })
            .await
        {
            Ok(crate::state_machine::Response::Txn {
                revision,
                succeeded,
                failed_compares,
            }) => Ok(Response::new(pb::TxnResponse {
                header: self.header(revision, Consistency::Linearizable),
                succeeded,
                failed_compares: failed_compares.iter().map(|(i, _)| *i).collect(),
                failed_current_mod_revisions: failed_compares.iter().map(|(_, r)| *r).collect(),
            })),
            Ok(other) => Err(unexpected(other)),
            Err(e) => {
                self.forward(e, forwarded, req, |mut c, r| async move { c.txn(r).await })
                    .await
            }
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if !req.prefix {
            check_key("key", &req.key)?;
        } else if req.key.len() > MAX_KEY_BYTES {
            return Err(invalid(format!(
                "key: {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)",
                req.key.len()
            )));
        }
        let permit = self.watch_slots.clone().try_acquire_owned().map_err(|_| {
            to_status(Error::ResourceExhausted(format!(
                "this node already serves {WATCH_STREAMS_MAX} watches (WATCH_STREAMS_MAX)"
            )))
        })?;
        let state = self.node.state.clone();
        let mut revisions = state.subscribe();
        let (start, first) = {
            let applied = state.read();
            let current = applied.machine.revision();
            let start = if req.start_revision == 0 {
                current + 1
            } else {
                req.start_revision
            };
            if let Err(oldest_available) = applied.machine.history().since(start, 0) {
                return Err(to_status(Error::Compacted {
                    requested: start,
                    oldest_available,
                }));
            }
            (
                start,
                pb::WatchResponse {
                    header: self.header(current, Consistency::Serializable),
                    revision: 0,
                    events: Vec::new(),
                },
            )
        };
        let mut stopping = self.stopping.clone();
        let (sender, receiver) = mpsc::channel(16);
        let node = self.node.clone();
        let progress_interval = Duration::from_millis(self.node.config.watch_progress_ms);
        tokio::spawn(async move {
            let _permit = permit;
            if sender.send(Ok(first)).await.is_err() {
                return;
            }
            let header = |revision| {
                Some(pb::ResponseHeader {
                    revision,
                    node_id: node.id,
                    raft_term: node.term(),
                    consistency: pb::ReadConsistency::Serializable as i32,
                })
            };
            let mut next = start;
            // The stream's cursor: every watched change at or below it has been sent (those
            // before `start` are not this stream's business).
            let mut scanned = start - 1;
            let mut progress = Progress::new(progress_interval, scanned, Instant::now());
            loop {
                revisions.borrow_and_update();
                let batch = {
                    let applied = state.read();
                    applied
                        .machine
                        .history()
                        .since(next, WATCH_BATCH_REVISIONS)
                        .map(|changes| (changes, applied.machine.revision()))
                };
                let (changes, current) = match batch {
                    Ok(batch) => batch,
                    Err(oldest_available) => {
                        let _ = sender
                            .send(Err(to_status(Error::Compacted {
                                requested: next,
                                oldest_available,
                            })))
                            .await;
                        return;
                    }
                };
                let full = changes.len() == WATCH_BATCH_REVISIONS;
                for change in changes {
                    next = change.revision + 1;
                    scanned = change.revision;
                    let events: Vec<pb::Event> = change
                        .events
                        .into_iter()
                        .filter(|e| {
                            if req.prefix {
                                e.kv.key.starts_with(&req.key)
                            } else {
                                e.kv.key == req.key
                            }
                        })
                        .map(|e| pb::Event {
                            r#type: match e.kind {
                                EventKind::Put => pb::EventType::Put,
                                EventKind::Delete => pb::EventType::Delete,
                            } as i32,
                            kv: Some(to_pb(e.kv)),
                        })
                        .collect();
                    if events.is_empty() {
                        continue;
                    }
                    let message = pb::WatchResponse {
                        header: header(current),
                        revision: change.revision,
                        events,
                    };
                    if sender.send(Ok(message)).await.is_err() {
                        return;
                    }
                    progress.sent(change.revision, Instant::now());
                }
                if full {
                    continue;
                }
                // The history holds every revision up to `current` (read under the same lock), and
                // all of them from `next` on were in this batch: the stream has scanned up to there.
                scanned = scanned.max(current);
                if let Some(cursor) = progress.due(scanned, Instant::now()) {
                    let notice = pb::WatchResponse {
                        header: header(cursor),
                        revision: cursor,
                        events: Vec::new(),
                    };
                    if sender.send(Ok(notice)).await.is_err() {
                        return;
                    }
                    progress.sent(cursor, Instant::now());
                }
                tokio::select! {
                    changed = revisions.changed() => if changed.is_err() { return },
                    () = progress::until(progress.deadline(scanned)) => {}
                    _ = sender.closed() => return,
                    () = async { let _ = stopping.wait_for(|stop| *stop).await.map(|_| ()); } => {
                        let _ = sender.send(Err(Status::unavailable("the node is shutting down; resume the watch on another node"))).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}

pub fn to_pb(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        session_id: kv.session_id,
    }
}

fn invalid(message: String) -> Status {
    to_status(Error::InvalidArgument(message))
}

fn unexpected(response: crate::state_machine::Response) -> Status {
    Status::internal(format!("unexpected state machine response {response:?}"))
}

fn request_id(id: Option<pb::RequestId>) -> Result<RequestId, Status> {
    let id = id.ok_or_else(|| {
        invalid("request_id: required on every write, so a retry applies once".into())
    })?;
    if id.client_id == 0 || id.serial == 0 {
        return Err(invalid(
            "request_id: client_id and serial must be non-zero".into(),
        ));
    }
    Ok(RequestId {
        client_id: id.client_id,
        serial: id.serial,
        min_pending_serial: id.min_pending_serial,
    })
}

fn check_request_size<M: Message>(request: &M) -> Result<(), Status> {
    let size = request.encoded_len();
    if size > MAX_REQUEST_BYTES {
        return Err(invalid(format!("request: {size} bytes is larger than the limit of {MAX_REQUEST_BYTES} bytes (MAX_REQUEST_BYTES)")));
    }
    Ok(())
}

fn check_key(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(invalid(format!("{field}: must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid(format!(
            "{field}: {} bytes is longer than the limit of {MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)",
            key.len()
        )));
    }
    Ok(())
}

fn check_value(field: &str, value: &[u8]) -> Result<(), Status> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(invalid(format!("{field}: {} bytes is larger than the limit of {MAX_VALUE_BYTES} bytes (MAX_VALUE_BYTES)", value.len())));
    }
    Ok(())
}

fn txn_command(req: &pb::TxnRequest) -> Result<(Vec<Compare>, Vec<TxnOp>), Status> {
    if req.compares.len() > MAX_TXN_COMPARES {
        return Err(invalid(format!(
            "compares: {} is more than the limit of {MAX_TXN_COMPARES} (MAX_TXN_COMPARES)",
            req.compares.len()
        )));
    }
    if req.ops.len() > MAX_TXN_OPS {
        return Err(invalid(format!(
            "ops: {} is more than the limit of {MAX_TXN_OPS} (MAX_TXN_OPS)",
            req.ops.len()
        )));
    }
    let mut compares = Vec::with_capacity(req.compares.len());
    for (i, compare) in req.compares.iter().enumerate() {
        check_key(&format!("compares[{i}].key"), &compare.key)?;
        compares.push(Compare {
            key: compare.key.clone(),
            mod_revision: compare.mod_revision,
        });
    }
    let mut seen = HashSet::new();
    let mut ops = Vec::with_capacity(req.ops.len());
    for (i, op) in req.ops.iter().enumerate() {
        let op = match &op.op {
            Some(pb::txn_op::Op::Put(put)) => {
                check_value(&format!("ops[{i}].put.value"), &put.value)?;
                TxnOp::Put {
                    key: put.key.clone(),
                    value: put.value.clone(),
                }
            }
            Some(pb::txn_op::Op::Delete(delete)) => TxnOp::Delete {
                key: delete.key.clone(),
            },
            None => return Err(invalid(format!("ops[{i}]: must be a put or a delete"))),
        };
        let key = match &op {
            TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
        };
        check_key(&format!("ops[{i}].key"), key)?;
        if !seen.insert(key.clone()) {
            return Err(invalid(format!(
                "ops[{i}].key: {:?} appears more than once in the transaction",
                String::from_utf8_lossy(key)
            )));
        }
        ops.push(op);
    }
    Ok((compares, ops))
}
