//! Reads through the raw KV client: one key, or every key under a prefix across pages.

use std::time::Duration;

use anyhow::Context as _;
use conclave_proto::v1::kv_client::KvClient;
use conclave_proto::v1::{GetRequest, GetResponse, KeyValue, ListRequest, ReadConsistency};
use tonic::transport::Channel;

use crate::poll::retry_transient;

/// Gets `key` with `consistency`, retrying transient errors (no leader yet, node restarting) for up
/// to `timeout`.
pub async fn get(
    client: &KvClient<Channel>,
    key: impl Into<Vec<u8>>,
    consistency: ReadConsistency,
    timeout: Duration,
) -> anyhow::Result<GetResponse> {
    let request = GetRequest {
        key: key.into(),
        consistency: consistency as i32,
    };
    let key_text = String::from_utf8_lossy(&request.key).into_owned();
    let response = retry_transient("get", timeout, || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.get(request).await }
    })
    .await
    .with_context(|| format!("Get {key_text:?} ({consistency:?})"))?;
    Ok(response.into_inner())
}

/// Every key under `prefix`, following `next_start_after` across pages of `page` keys. Each page
/// is retried on transient errors for up to `timeout`.
pub async fn list_all(
    client: &KvClient<Channel>,
    prefix: impl Into<Vec<u8>>,
    consistency: ReadConsistency,
    page: u32,
    timeout: Duration,
) -> anyhow::Result<Vec<KeyValue>> {
    let prefix = prefix.into();
    let mut kvs = Vec::new();
    let mut start_after = Vec::new();
    loop {
        let request = ListRequest {
            prefix: prefix.clone(),
            limit: page,
            start_after: start_after.clone(),
            consistency: consistency as i32,
            keys_only: false,
        };
        let response = retry_transient("list", timeout, || {
            let mut client = client.clone();
            let request = request.clone();
            async move { client.list(request).await }
        })
        .await
        .with_context(|| format!("List {:?}", String::from_utf8_lossy(&prefix)))?
        .into_inner();
        kvs.extend(response.kvs);
        if !response.more {
            return Ok(kvs);
        }
        anyhow::ensure!(
            response.next_start_after > start_after,
            "List did not advance: next_start_after {:?} after {:?}",
            String::from_utf8_lossy(&response.next_start_after),
            String::from_utf8_lossy(&start_after)
        );
        start_after = response.next_start_after;
    }
}
