//! Barrier calls (barriers.proto): enter a named meeting point of N parties and wait for k of them,
//! read one, list them.

use std::time::Duration;

use conclave_proto::limits::{MAX_BARRIER_PARTIES, MAX_BARRIER_TIMEOUT_MS};
use conclave_proto::v1::barriers_client::BarriersClient;
use conclave_proto::v1::{
    self as proto, Barrier, EnterRequest, GetBarrierRequest, ListBarriersRequest, ReadConsistency,
};
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, Client, MAX_RESPONSE_BYTES};
use crate::error::{Error, Result};
use crate::kv::Header;
use crate::locks::{check_page, check_wait, waiting, LockListOptions};
use conclave_proto::validate;

/// How [`Client::enter_barrier`] enters: the barrier's shape (fixed by its first Enter) and how long
/// this call waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierOptions {
    /// N, 1 ..= 1000.
    pub parties: u32,
    /// k, 1 ..= N, the arrivals that release it; 0 means N.
    pub quorum: u32,
    /// The barrier's timeout from its first Enter, 1 ms ..= 24 h.
    pub timeout: Duration,
    /// How long this call waits for the barrier to close, at most 5 min (zero: answers at once).
    /// The call's deadline is this plus the client's deadline.
    pub wait: Duration,
}

/// The result of [`Client::enter_barrier`].
#[derive(Debug, Clone, PartialEq)]
pub struct BarrierEntry {
    pub header: Header,
    /// The barrier as it stood when the call was answered: RELEASED, TIMED_OUT, or still WAITING
    /// when the wait ended first.
    pub barrier: Option<Barrier>,
    /// Whether this participant was counted (false when it entered a closed barrier).
    pub counted: bool,
}

/// One barrier as read.
#[derive(Debug, Clone, PartialEq)]
pub struct BarrierRead {
    pub header: Header,
    pub barrier: Barrier,
}

/// One page of barriers, in name order.
#[derive(Debug, Clone, PartialEq)]
pub struct BarrierPage {
    pub header: Header,
    pub barriers: Vec<Barrier>,
    /// True when more follow; continue with `after` set to the last name.
    pub more: bool,
}

impl Client {
    /// Arrives at the barrier `name` as `participant` and waits up to `options.wait` for it to
    /// close. The first Enter creates it with `options`' parties, quorum and timeout; later ones
    /// must name the same parties and quorum (`Rejected { code: FailedPrecondition }` otherwise).
    /// Entering again is answered as the first time; a retry after an unknown outcome carries the
    /// same request id.
    pub async fn enter_barrier(
        &self,
        name: &str,
        participant: &str,
        options: &BarrierOptions,
    ) -> Result<BarrierEntry> {
        validate::name("name", name)?;
        validate::name("participant", participant)?;
        if !(1..=MAX_BARRIER_PARTIES).contains(&options.parties) {
            return Err(Error::invalid_input(format!(
                "parties is {}; it must be within 1 ..= {MAX_BARRIER_PARTIES}",
                options.parties
            )));
        }
        if options.quorum > options.parties {
            return Err(Error::invalid_input(format!(
                "quorum is {}; it must be within 1 ..= parties ({})",
                options.quorum, options.parties
            )));
        }
        let timeout_ms = options.timeout.as_millis() as u64;
        if !(1..=MAX_BARRIER_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(Error::invalid_input(format!(
                "timeout is {timeout_ms} ms; it must be within 1 ..= {MAX_BARRIER_TIMEOUT_MS} ms"
            )));
        }
        let wait_ms = check_wait(options.wait)?;
        let pending = self.begin_write();
        let response = self
            .call_with(CallKind::Write, waiting(options.wait), |channel| {
                let request = EnterRequest {
                    request_id: Some(pending.request_id()),
                    name: name.to_string(),
                    participant: participant.to_string(),
                    parties: options.parties,
                    quorum: options.quorum,
                    timeout_ms,
                    wait_ms,
                };
                async move { barriers(channel).enter(request).await }
            })
            .await?;
        Ok(BarrierEntry {
            header: response.header.into(),
            barrier: response.barrier,
            counted: response.counted,
        })
    }

    /// Reads one barrier linearizably; an unknown (or forgotten) one is
    /// `Rejected { code: NotFound }`.
    pub async fn get_barrier(&self, name: &str) -> Result<BarrierRead> {
        self.get_barrier_with(name, ReadConsistency::Linearizable)
            .await
    }

    /// Reads one barrier with the given consistency.
    pub async fn get_barrier_with(
        &self,
        name: &str,
        consistency: ReadConsistency,
    ) -> Result<BarrierRead> {
        validate::name("name", name)?;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetBarrierRequest {
                    name: name.to_string(),
                    consistency: consistency.into(),
                };
                async move { barriers(channel).get_barrier(request).await }
            })
            .await?;
        Ok(BarrierRead {
            header: response.header.into(),
            barrier: response.barrier.ok_or_else(|| Error::Unavailable {
                message: "the server's answer lacks its barrier".to_string(),
            })?,
        })
    }

    /// Reads one page of barriers in name order.
    pub async fn list_barriers(&self, options: LockListOptions) -> Result<BarrierPage> {
        check_page(&options.after, options.limit)?;
        let consistency = options.consistency;
        let request = ListBarriersRequest {
            after: options.after,
            limit: options.limit,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { barriers(channel).list_barriers(request).await }
            })
            .await?;
        Ok(BarrierPage {
            header: response.header.into(),
            barriers: response.barriers,
            more: response.more,
        })
    }
}

/// A Barriers stub on `channel`, accepting responses up to the client's bound.
fn barriers(channel: Channel) -> BarriersClient<Channel> {
    BarriersClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

served_by_header!(
    proto::EnterResponse,
    proto::GetBarrierResponse,
    proto::ListBarriersResponse,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn barrier_limits_are_checked_locally() {
        let client = Client::connect(["127.0.0.1:1"]).expect("valid endpoint");
        let options = BarrierOptions {
            parties: 3,
            quorum: 0,
            timeout: Duration::from_secs(60),
            wait: Duration::ZERO,
        };
        let message = |result: Result<BarrierEntry>| match result {
            Err(Error::InvalidInput { message }) => message,
            other => panic!("expected invalid input, got {other:?}"),
        };
        let with = |change: fn(&mut BarrierOptions)| {
            let mut changed = options;
            change(&mut changed);
            changed
        };
        assert!(message(
            client
                .enter_barrier("b", "p", &with(|o| o.parties = 0))
                .await
        )
        .starts_with("parties"));
        assert!(message(
            client
                .enter_barrier("b", "p", &with(|o| o.parties = 1001))
                .await
        )
        .starts_with("parties"));
        assert!(message(
            client
                .enter_barrier("b", "p", &with(|o| o.quorum = 4))
                .await
        )
        .starts_with("quorum"));
        assert!(message(
            client
                .enter_barrier("b", "p", &with(|o| o.timeout = Duration::ZERO))
                .await
        )
        .starts_with("timeout"));
        assert!(message(
            client
                .enter_barrier("b", "p", &with(|o| o.wait = Duration::from_secs(301)))
                .await
        )
        .starts_with("wait"));
        assert!(
            message(client.enter_barrier("b", "a b", &options).await).starts_with("participant")
        );
    }
}
