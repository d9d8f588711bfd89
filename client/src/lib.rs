//! Typed async client for a Conclave cluster: key-value calls, watches and cluster operations.
//!
//! ```no_run
//! # async fn example() -> Result<(), conclave_client::Error> {
//! use conclave_client::{CasAction, Client};
//!
//! let client = Client::connect(["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"])?;
//! let put = client.put("config/mode", "blue").await?;
//! let swapped = client
//!     .compare_and_swap("config/mode", put.header.revision, CasAction::Put(b"green".to_vec()))
//!     .await?;
//! assert!(swapped.succeeded);
//! # Ok(())
//! # }
//! ```
//!
//! Every call finds the leader by itself (following `conclave-leader` hints and asking nodes for
//! their status), retries within a deadline, and reports failures as [`Error`], which keeps
//! "definitely not applied" ([`Error::Rejected`]) apart from "outcome unknown"
//! ([`Error::Indeterminate`]). Writes carry a request id, so a retry after an unknown outcome is
//! applied at most once.

mod client;
mod cluster;
mod endpoint;
mod error;
mod kv;
mod request_id;
mod watch;

pub use client::{Client, ClientOptions};
pub use cluster::EndpointStatus;
pub use endpoint::normalize_endpoint;
pub use error::{parse_leader_hint, Error, LeaderHint, Result};
pub use kv::{
    CasAction, CasResult, Compare, DeleteResult, FailedCompare, GetResult, Header, ListAll,
    ListOptions, ListPage, PutResult, TxnOp, TxnResult, MAX_KEY_BYTES, MAX_LIST_LIMIT,
    MAX_REQUEST_BYTES, MAX_TXN_COMPARES, MAX_TXN_OPS, MAX_VALUE_BYTES,
};
pub use watch::{WatchOptions, WatchStream};

/// Wire types the client's API exposes, re-exported so callers need not depend on
/// `conclave-proto` for them.
pub use conclave_proto::v1::{
    Event, EventType, KeyValue, Member, MembershipResponse, ReadConsistency, ReplicationProgress,
    Role, StatusResponse, WatchResponse,
};
/// gRPC status codes, as carried by [`Error::Rejected`].
pub use tonic::Code;
