//! The KV service: validate, then read (linearized through the gateway, or forwarded) or write
//! through the gateway (or forward), then convert. Watches are served by any node from its
//! applied state and change history, as a feed source (`feed.rs`).

use std::collections::HashSet;
use std::sync::Arc;

use conclave_proto::v1 as pb;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::kv_server::Kv;
use conclave_proto::validate;
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::feed::{self, FeedSource, Read, Wake};
use super::gateway::{
    check_request_size, header, invalid, read_consistency, request_id, unexpected, Gateway,
};
use super::status::to_status;
use super::streams::EventStream;
use super::validation::rule;
use crate::error::Error;
use crate::limits::*;
use crate::node::{Consistency, Node};
use crate::state_machine::{
    Command, Compare, EventKind, KeyValue, Response as SmResponse, StateMachine, TxnOp,
};

pub struct KvService {
    gateway: Gateway,
    /// KV watches (WATCH_STREAMS_MAX), apart from the task and decision watches.
    watch_slots: Arc<Semaphore>,
}

impl KvService {
    pub fn new(gateway: Gateway) -> Self {
        KvService {
            gateway,
            watch_slots: Arc::new(Semaphore::new(WATCH_STREAMS_MAX)),
        }
    }
}

/// The generated client, for forwarding, with the same message bounds as the server.
pub fn client(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel)
        .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

type WatchStream = EventStream<pb::WatchResponse>;

#[tonic::async_trait]
impl Kv for KvService {
    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        rule(validate::key("key", &req.key))?;
        rule(validate::value("value", &req.value))?;
        let command = Command::Put {
            key: req.key.clone(),
            value: req.value.clone(),
            session_id: req.session_id,
        };
        self.gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, fence, command),
                |response| match response {
                    SmResponse::Put { revision, previous } => Ok(Response::new(pb::PutResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                        previous: previous.map(to_pb),
                    })),
                    other => Err(unexpected(other)),
                },
                |c, r| async move { client(c).put(r).await },
            )
            .await
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        rule(validate::key("key", &req.key))?;
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(
                    e,
                    forwarded,
                    req,
                    |c, r| async move { client(c).get(r).await },
                )
                .await;
        }
        let state = self.gateway.node.state.read();
        Ok(Response::new(pb::GetResponse {
            header: self.gateway.header(state.machine.revision(), consistency),
            kv: state.machine.get(&req.key).map(to_pb),
        }))
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        rule(validate::key("key", &req.key))?;
        let command = Command::Delete {
            key: req.key.clone(),
        };
        self.gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, fence, command),
                |response| match response {
                    SmResponse::Delete { revision, previous } => {
                        Ok(Response::new(pb::DeleteResponse {
                            header: self.gateway.header(revision, Consistency::Linearizable),
                            deleted: previous.is_some(),
                            previous: previous.map(to_pb),
                        }))
                    }
                    other => Err(unexpected(other)),
                },
                |c, r| async move { client(c).delete(r).await },
            )
            .await
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        rule(validate::key_prefix("prefix", &req.prefix))?;
        rule(validate::key_prefix("start_after", &req.start_after))?;
        if req.limit > MAX_LIST_LIMIT {
            return Err(invalid(format!(
                "limit: {} is above the maximum page of {MAX_LIST_LIMIT} keys (MAX_LIST_LIMIT)",
                req.limit
            )));
        }
        let consistency = read_consistency(req.consistency)?;
        if let Err(e) = self.gateway.linearize(consistency).await {
            return self
                .gateway
                .forward(
                    e,
                    forwarded,
                    req,
                    |c, r| async move { client(c).list(r).await },
                )
                .await;
        }
        let limit = if req.limit == 0 {
            MAX_LIST_LIMIT
        } else {
            req.limit
        } as usize;
        let state = self.gateway.node.state.read();
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
            header: self.gateway.header(state.machine.revision(), consistency),
            kvs,
            more,
            next_start_after,
        }))
    }

    async fn compare_and_swap(
        &self,
        request: Request<pb::CompareAndSwapRequest>,
    ) -> Result<Response<pb::CompareAndSwapResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        rule(validate::key("key", &req.key))?;
        rule(validate::value("value", &req.value))?;
        let command = Command::CompareAndSwap {
            key: req.key.clone(),
            expected_mod_revision: req.expected_mod_revision,
            value: (!req.delete).then(|| req.value.clone()),
        };
        self.gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, fence, command),
                |response| match response {
                    SmResponse::CompareAndSwap {
                        revision,
                        succeeded,
                        current,
                    } => Ok(Response::new(pb::CompareAndSwapResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                        succeeded,
                        current: current.map(to_pb),
                    })),
                    other => Err(unexpected(other)),
                },
                |c, r| async move { client(c).compare_and_swap(r).await },
            )
            .await
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let (forwarded, req) = self.gateway.accept(request)?;
        check_request_size(&req)?;
        let request_id = request_id(req.request_id)?;
        let fence = super::validation::fence(req.fence.as_ref())?;
        let (compares, ops) = txn_command(&req)?;
        self.gateway
            .write_or_forward_fenced(
                forwarded,
                req,
                (request_id, fence, Command::Txn { compares, ops }),
                |response| match response {
                    SmResponse::Txn {
                        revision,
                        succeeded,
                        failed_compares,
                    } => Ok(Response::new(pb::TxnResponse {
                        header: self.gateway.header(revision, Consistency::Linearizable),
                        succeeded,
                        failed_compares: failed_compares.iter().map(|(i, _)| *i).collect(),
                        failed_current_mod_revisions: failed_compares
                            .iter()
                            .map(|(_, r)| *r)
                            .collect(),
                    })),
                    other => Err(unexpected(other)),
                },
                |c, r| async move { client(c).txn(r).await },
            )
            .await
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let req = request.into_inner();
        if req.prefix {
            rule(validate::key_prefix("key", &req.key))?;
        } else {
            rule(validate::key("key", &req.key))?;
        }
        let permit = self.watch_slots.clone().try_acquire_owned().map_err(|_| {
            to_status(Error::ResourceExhausted(format!(
                "this node already serves {WATCH_STREAMS_MAX} watches (WATCH_STREAMS_MAX)"
            )))
        })?;
        let source = KvFeed {
            node: self.gateway.node.clone(),
            req,
        };
        Ok(Response::new(feed::serve(&self.gateway, permit, source)?))
    }
}

/// The feed of a KV watch: the change history, one message per revision with watched changes.
/// Its cursor is the revision up to which it has scanned (every watched change at or below it has
/// been sent); a progress notice is a message without events at that revision.
struct KvFeed {
    node: Arc<Node>,
    req: pb::WatchRequest,
}

impl KvFeed {
    fn header(&self, revision: u64) -> Option<pb::ResponseHeader> {
        Some(header(
            self.node.id,
            self.node.term(),
            revision,
            Consistency::Serializable,
        ))
    }

    fn watches(&self, key: &[u8]) -> bool {
        if self.req.prefix {
            key.starts_with(&self.req.key)
        } else {
            key == self.req.key
        }
    }
}

impl FeedSource for KvFeed {
    type Message = pb::WatchResponse;
    const WAKE: Wake = Wake::Revision;

    /// From `start_revision` (0: the next revision) while the history still holds it, else
    /// COMPACTED; opens with a confirmation (revision 0, the current revision in its header).
    fn start(&mut self, machine: &StateMachine) -> Result<(u64, Vec<pb::WatchResponse>), Status> {
        let current = machine.revision();
        let start = match self.req.start_revision {
            0 => current + 1,
            revision => revision,
        };
        if let Err(oldest_available) = machine.history().since(start, 0) {
            return Err(to_status(Error::Compacted {
                requested: start,
                oldest_available,
            }));
        }
        let confirmation = pb::WatchResponse {
            header: self.header(current),
            revision: 0,
            events: Vec::new(),
        };
        // The revisions before `start` are not this stream's business.
        Ok((start - 1, vec![confirmation]))
    }

    fn read(
        &mut self,
        machine: &StateMachine,
        cursor: u64,
        out: &mut Vec<pb::WatchResponse>,
    ) -> Result<Read, Status> {
        let next = cursor + 1;
        let changes = machine
            .history()
            .since(next, WATCH_BATCH_REVISIONS)
            .map_err(|oldest_available| {
                to_status(Error::Compacted {
                    requested: next,
                    oldest_available,
                })
            })?;
        let current = machine.revision();
        let full = changes.len() == WATCH_BATCH_REVISIONS;
        let mut scanned = cursor;
        for change in changes {
            scanned = change.revision;
            let events: Vec<pb::Event> = change
                .events
                .into_iter()
                .filter(|e| self.watches(&e.kv.key))
                .map(|e| pb::Event {
                    r#type: match e.kind {
                        EventKind::Put => pb::EventType::Put,
                        EventKind::Delete => pb::EventType::Delete,
                    } as i32,
                    kv: Some(to_pb(e.kv)),
                })
                .collect();
            if !events.is_empty() {
                out.push(pb::WatchResponse {
                    header: self.header(current),
                    revision: change.revision,
                    events,
                });
            }
        }
        if !full {
            // The history holds every revision up to `current` (read under the same lock), and
            // all of them after the cursor were in this batch: scanned up to there.
            scanned = scanned.max(current);
        }
        Ok(Read {
            cursor: scanned,
            caught_up: !full,
            ended: false,
        })
    }

    fn bookmark(&self, cursor: u64) -> Option<pb::WatchResponse> {
        Some(pb::WatchResponse {
            header: self.header(cursor),
            revision: cursor,
            events: Vec::new(),
        })
    }

    fn cursor_of(message: &pb::WatchResponse) -> u64 {
        message.revision
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
        rule(validate::key(&format!("compares[{i}].key"), &compare.key))?;
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
                rule(validate::value(&format!("ops[{i}].put.value"), &put.value))?;
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
        rule(validate::key(&format!("ops[{i}].key"), key))?;
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
