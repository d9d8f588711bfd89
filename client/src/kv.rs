//! Typed key-value calls: put, get, delete, list, compare-and-swap and transactions.

use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::{
    self as proto, txn_op, CompareAndSwapRequest, DeleteRequest, Fence, GetRequest, KeyValue,
    ListRequest, PutRequest, ReadConsistency, ResponseHeader, TxnRequest,
};
use conclave_proto::validate;
use prost::Message;
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, Client, MAX_RESPONSE_BYTES};
use crate::error::{Error, Result};
use crate::locks::check_fence;

/// The request limits of kv.proto, checked here before sending.
pub use conclave_proto::limits::{
    MAX_KEY_BYTES, MAX_LIST_LIMIT, MAX_REQUEST_BYTES, MAX_TXN_COMPARES, MAX_TXN_OPS,
    MAX_VALUE_BYTES,
};

/// Where and how a request was served; carried by every result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The store revision the request was served at; for a write, the revision it created (or the
    /// current revision for a write that changed nothing, such as a failed compare-and-swap).
    pub revision: u64,
    /// The node that served the request.
    pub node_id: u64,
    /// The Raft term the serving node was in.
    pub raft_term: u64,
    /// How a read was served; writes are always linearizable.
    pub consistency: ReadConsistency,
}

impl From<Option<ResponseHeader>> for Header {
    fn from(header: Option<ResponseHeader>) -> Self {
        let header = header.unwrap_or_default();
        Header {
            revision: header.revision,
            node_id: header.node_id,
            raft_term: header.raft_term,
            consistency: ReadConsistency::try_from(header.consistency)
                .unwrap_or(ReadConsistency::Linearizable),
        }
    }
}

/// How [`Client::put_with_options`] writes a key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Attach the key to this live agent session (0: none); see [`Client::put_with_session`].
    pub session_id: u64,
    /// Apply only while this grant is current; see [`Client::put_fenced`].
    pub fence: Option<Fence>,
}

/// The result of [`Client::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutResult {
    pub header: Header,
    /// The key as it was before the put, if it existed.
    pub previous: Option<KeyValue>,
}

/// The result of [`Client::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetResult {
    pub header: Header,
    /// `None` when the key does not exist.
    pub kv: Option<KeyValue>,
}

/// The result of [`Client::delete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteResult {
    pub header: Header,
    /// False when the key did not exist (the delete still created a revision).
    pub deleted: bool,
    /// The key as it was before the delete, if it existed.
    pub previous: Option<KeyValue>,
}

/// What to list; `Default` lists every key, linearizably, 1000 per page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    /// Keys starting with this prefix; empty lists every key.
    pub prefix: Vec<u8>,
    /// Page size, 1..=1000; 0 means 1000.
    pub limit: u32,
    /// Only keys strictly greater than this one; empty starts at the prefix.
    pub start_after: Vec<u8>,
    /// Return keys and metadata with empty values.
    pub keys_only: bool,
    pub consistency: ReadConsistency,
}

impl Default for ListOptions {
    fn default() -> Self {
        ListOptions {
            prefix: Vec::new(),
            limit: 0,
            start_after: Vec::new(),
            keys_only: false,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// One page of [`Client::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    /// The page is consistent at `header.revision`.
    pub header: Header,
    pub kvs: Vec<KeyValue>,
    /// True when more keys follow; continue with `start_after = next_start_after`.
    pub more: bool,
    pub next_start_after: Vec<u8>,
}

/// Every page of a listing, from [`Client::list_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListAll {
    pub kvs: Vec<KeyValue>,
    /// The header of the last page. Pages may be at different revisions, so the listing as a whole
    /// is not one snapshot.
    pub header: Header,
    /// How many pages were read.
    pub pages: usize,
}

/// What a compare-and-swap does when its compare holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasAction {
    /// Write this value.
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
}

/// The result of [`Client::compare_and_swap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResult {
    pub header: Header,
    pub succeeded: bool,
    /// On success, the key as written (`None` after a delete); on failure, the key as it is now
    /// (`None` if absent).
    pub current: Option<KeyValue>,
}

/// A transaction condition: holds when the key's mod_revision equals `mod_revision` (0: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: Vec<u8>,
    pub mod_revision: u64,
}

/// A transaction operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// A compare that did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedCompare {
    /// Its index in the transaction's compares.
    pub index: usize,
    /// The key's mod_revision when the transaction was evaluated (0: absent).
    pub current_mod_revision: u64,
}

/// The result of [`Client::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub header: Header,
    pub succeeded: bool,
    /// When not succeeded, the compares that failed.
    pub failed_compares: Vec<FailedCompare>,
}

impl Client {
    /// Sets `key` to `value`. Retried with the same request id until it has a definite answer or
    /// the deadline passes ([`Error::Indeterminate`]).
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<PutResult> {
        self.put_with_session(key, value, 0).await
    }

    /// Sets `key` to `value` and attaches it to the agent session `session_id` (0: none): the key
    /// is ephemeral and is deleted when that session expires or is closed, as etcd deletes keys
    /// attached to a lease. A session that is unknown or no longer live is
    /// `Rejected { code: FailedPrecondition }`, and nothing is written. A later put without a
    /// session detaches the key.
    pub async fn put_with_session(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        session_id: u64,
    ) -> Result<PutResult> {
        let options = PutOptions {
            session_id,
            fence: None,
        };
        self.put_with_options(key, value, options).await
    }

    /// Sets `key` to `value` only while `fence` names a current grant of a lock, semaphore or
    /// election (its name and fencing token): checked in the same log entry as the write, so a
    /// holder that lost it can never write. A stale fence is [`Error::LockLost`], and nothing is
    /// written.
    pub async fn put_fenced(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        fence: &Fence,
    ) -> Result<PutResult> {
        let options = PutOptions {
            session_id: 0,
            fence: Some(fence.clone()),
        };
        self.put_with_options(key, value, options).await
    }

    /// Sets `key` to `value` with a session and/or a fence ([`PutOptions`]).
    pub async fn put_with_options(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
        options: PutOptions,
    ) -> Result<PutResult> {
        let key = checked_key(key.into())?;
        let value = checked_value(value.into())?;
        let PutOptions { session_id, fence } = options;
        check_fence(fence.as_ref())?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = PutRequest {
                    request_id: Some(pending.request_id()),
                    key: key.clone(),
                    value: value.clone(),
                    session_id,
                    fence: fence.clone(),
                };
                async move { kv(channel).put(request).await }
            })
            .await?;
        Ok(PutResult {
            header: response.header.into(),
            previous: response.previous,
        })
    }

    /// Reads `key` linearizably.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<GetResult> {
        self.get_with(key, ReadConsistency::Linearizable).await
    }

    /// Reads `key` with the given consistency. Serializable reads are served by the current
    /// endpoint of the rotation (the first endpoint while it answers), from its local state.
    pub async fn get_with(
        &self,
        key: impl Into<Vec<u8>>,
        consistency: ReadConsistency,
    ) -> Result<GetResult> {
        let key = checked_key(key.into())?;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetRequest {
                    key: key.clone(),
                    consistency: consistency.into(),
                };
                async move { kv(channel).get(request).await }
            })
            .await?;
        Ok(GetResult {
            header: response.header.into(),
            kv: response.kv,
        })
    }

    /// Deletes `key`. Deleting an absent key succeeds with `deleted == false`.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<DeleteResult> {
        self.delete_with_fence(key.into(), None).await
    }

    /// Deletes `key` only while `fence` names a current grant (see [`Client::put_fenced`]); a
    /// stale fence is [`Error::LockLost`].
    pub async fn delete_fenced(
        &self,
        key: impl Into<Vec<u8>>,
        fence: &Fence,
    ) -> Result<DeleteResult> {
        self.delete_with_fence(key.into(), Some(fence.clone()))
            .await
    }

    async fn delete_with_fence(&self, key: Vec<u8>, fence: Option<Fence>) -> Result<DeleteResult> {
        let key = checked_key(key)?;
        check_fence(fence.as_ref())?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = DeleteRequest {
                    request_id: Some(pending.request_id()),
                    key: key.clone(),
                    fence: fence.clone(),
                };
                async move { kv(channel).delete(request).await }
            })
            .await?;
        Ok(DeleteResult {
            header: response.header.into(),
            deleted: response.deleted,
            previous: response.previous,
        })
    }

    /// Reads one page of keys.
    pub async fn list(&self, options: ListOptions) -> Result<ListPage> {
        if options.limit > MAX_LIST_LIMIT {
            return Err(Error::invalid_input(format!(
                "list limit {} is above the maximum page of {MAX_LIST_LIMIT}",
                options.limit
            )));
        }
        let consistency = options.consistency;
        let request = ListRequest {
            prefix: options.prefix,
            limit: options.limit,
            start_after: options.start_after,
            consistency: consistency.into(),
            keys_only: options.keys_only,
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { kv(channel).list(request).await }
            })
            .await?;
        Ok(ListPage {
            header: response.header.into(),
            kvs: response.kvs,
            more: response.more,
            next_start_after: response.next_start_after,
        })
    }

    /// Reads every page of a listing, starting after `options.start_after`, `options.limit` keys
    /// per page (0: 1000).
    pub async fn list_all(&self, options: ListOptions) -> Result<ListAll> {
        let mut options = options;
        let mut all = ListAll {
            kvs: Vec::new(),
            header: Header::from(None),
            pages: 0,
        };
        loop {
            let page = self.list(options.clone()).await?;
            all.kvs.extend(page.kvs);
            all.header = page.header;
            all.pages += 1;
            if !page.more {
                return Ok(all);
            }
            if page.next_start_after.is_empty() || page.next_start_after <= options.start_after {
                return Err(Error::Unavailable {
                    message: "the server reported more keys but no continuation after the last one"
                        .to_string(),
                });
            }
            options.start_after = page.next_start_after;
        }
    }

    /// Applies `action` to `key` only if its mod_revision is `expected_mod_revision` (0: the key
    /// must not exist). A compare that does not hold is a result with `succeeded == false`, not an
    /// error.
    pub async fn compare_and_swap(
        &self,
        key: impl Into<Vec<u8>>,
        expected_mod_revision: u64,
        action: CasAction,
    ) -> Result<CasResult> {
        self.cas_with_fence(key.into(), expected_mod_revision, action, None)
            .await
    }

    /// [`Client::compare_and_swap`] applied only while `fence` names a current grant (see
    /// [`Client::put_fenced`]); a stale fence is [`Error::LockLost`], whatever the compare.
    pub async fn compare_and_swap_fenced(
        &self,
        key: impl Into<Vec<u8>>,
        expected_mod_revision: u64,
        action: CasAction,
        fence: &Fence,
    ) -> Result<CasResult> {
        self.cas_with_fence(
            key.into(),
            expected_mod_revision,
            action,
            Some(fence.clone()),
        )
        .await
    }

    async fn cas_with_fence(
        &self,
        key: Vec<u8>,
        expected_mod_revision: u64,
        action: CasAction,
        fence: Option<Fence>,
    ) -> Result<CasResult> {
        let key = checked_key(key)?;
        check_fence(fence.as_ref())?;
        let (value, delete) = match action {
            CasAction::Put(value) => (checked_value(value)?, false),
            CasAction::Delete => (Vec::new(), true),
        };
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = CompareAndSwapRequest {
                    request_id: Some(pending.request_id()),
                    key: key.clone(),
                    expected_mod_revision,
                    value: value.clone(),
                    delete,
                    fence: fence.clone(),
                };
                async move { kv(channel).compare_and_swap(request).await }
            })
            .await?;
        Ok(CasResult {
            header: response.header.into(),
            succeeded: response.succeeded,
            current: response.current,
        })
    }

    /// Applies `ops` atomically, at one new revision, if every compare holds; otherwise applies
    /// nothing and reports which compares failed.
    pub async fn txn(&self, compares: Vec<Compare>, ops: Vec<TxnOp>) -> Result<TxnResult> {
        self.txn_with_fence(compares, ops, None).await
    }

    /// [`Client::txn`] applied only while `fence` names a current grant (see
    /// [`Client::put_fenced`]); a stale fence is [`Error::LockLost`], whatever the compares.
    pub async fn txn_fenced(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        fence: &Fence,
    ) -> Result<TxnResult> {
        self.txn_with_fence(compares, ops, Some(fence.clone()))
            .await
    }

    async fn txn_with_fence(
        &self,
        compares: Vec<Compare>,
        ops: Vec<TxnOp>,
        fence: Option<Fence>,
    ) -> Result<TxnResult> {
        check_fence(fence.as_ref())?;
        if compares.len() > MAX_TXN_COMPARES {
            return Err(Error::invalid_input(format!(
                "{} compares; a transaction holds at most {MAX_TXN_COMPARES}",
                compares.len()
            )));
        }
        if ops.len() > MAX_TXN_OPS {
            return Err(Error::invalid_input(format!(
                "{} ops; a transaction holds at most {MAX_TXN_OPS}",
                ops.len()
            )));
        }
        let mut request = TxnRequest {
            request_id: None,
            compares: Vec::with_capacity(compares.len()),
            ops: Vec::with_capacity(ops.len()),
            fence,
        };
        for compare in compares {
            request.compares.push(proto::Compare {
                key: checked_key(compare.key)?,
                mod_revision: compare.mod_revision,
            });
        }
        for op in ops {
            let op = match op {
                TxnOp::Put { key, value } => txn_op::Op::Put(proto::TxnPut {
                    key: checked_key(key)?,
                    value: checked_value(value)?,
                }),
                TxnOp::Delete { key } => txn_op::Op::Delete(proto::TxnDelete {
                    key: checked_key(key)?,
                }),
            };
            request.ops.push(proto::TxnOp { op: Some(op) });
        }
        let encoded_len = request.encoded_len();
        if encoded_len > MAX_REQUEST_BYTES {
            return Err(Error::invalid_input(format!(
                "transaction is {encoded_len} bytes encoded; the limit is {MAX_REQUEST_BYTES}"
            )));
        }
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let mut request = request.clone();
                request.request_id = Some(pending.request_id());
                async move { kv(channel).txn(request).await }
            })
            .await?;
        let failed_compares = response
            .failed_compares
            .iter()
            .enumerate()
            .map(|(position, index)| FailedCompare {
                index: *index as usize,
                current_mod_revision: response
                    .failed_current_mod_revisions
                    .get(position)
                    .copied()
                    .unwrap_or(0),
            })
            .collect();
        Ok(TxnResult {
            header: response.header.into(),
            succeeded: response.succeeded,
            failed_compares,
        })
    }
}

/// A KV stub on `channel`, accepting responses up to the client's bound.
pub(crate) fn kv(channel: Channel) -> KvClient<Channel> {
    KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

/// `key`, once it passes the wire contract's key rule.
pub(crate) fn checked_key(key: Vec<u8>) -> Result<Vec<u8>> {
    validate::key("key", &key)?;
    Ok(key)
}

/// `value`, once it passes the wire contract's value rule.
fn checked_value(value: Vec<u8>) -> Result<Vec<u8>> {
    validate::value("value", &value)?;
    Ok(value)
}

served_by_header!(
    proto::PutResponse,
    proto::GetResponse,
    proto::DeleteResponse,
    proto::ListResponse,
    proto::CompareAndSwapResponse,
    proto::TxnResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_before_sending() {
        assert!(checked_key(Vec::new()).is_err());
        assert!(checked_key(vec![b'k'; MAX_KEY_BYTES]).is_ok());
        assert!(checked_key(vec![b'k'; MAX_KEY_BYTES + 1]).is_err());
        assert!(checked_value(Vec::new()).is_ok());
        assert!(checked_value(vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(checked_value(vec![0; MAX_VALUE_BYTES + 1]).is_err());
    }

    #[test]
    fn headers_default_when_absent() {
        let header = Header::from(None);
        assert_eq!(header.revision, 0);
        assert_eq!(header.consistency, ReadConsistency::Linearizable);
        let served = Header::from(Some(ResponseHeader {
            revision: 9,
            node_id: 2,
            raft_term: 3,
            consistency: ReadConsistency::Serializable.into(),
        }));
        assert_eq!(served.consistency, ReadConsistency::Serializable);
        assert_eq!(served.node_id, 2);
    }

    #[tokio::test]
    async fn local_validation_sends_nothing() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        let too_many = (0..=MAX_TXN_OPS)
            .map(|i| TxnOp::Delete {
                key: format!("k{i}").into_bytes(),
            })
            .collect();
        assert!(matches!(
            client.txn(Vec::new(), too_many).await,
            Err(Error::InvalidInput { .. })
        ));
        let big = vec![0u8; MAX_VALUE_BYTES];
        let ops = (0..3)
            .map(|i| TxnOp::Put {
                key: format!("k{i}").into_bytes(),
                value: big.clone(),
            })
            .collect();
        assert!(matches!(
            client.txn(Vec::new(), ops).await,
            Err(Error::InvalidInput { .. })
        ));
        assert!(matches!(
            client.put("", "v").await,
            Err(Error::InvalidInput { .. })
        ));
        let options = ListOptions {
            limit: MAX_LIST_LIMIT + 1,
            ..ListOptions::default()
        };
        assert!(matches!(
            client.list(options).await,
            Err(Error::InvalidInput { .. })
        ));
    }
}
