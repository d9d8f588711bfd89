//! The topics' part of the cross-primitive transaction (`state_machine::transaction`): a publish
//! op, checked by `check_publish` (pure) and stored by `store_checked` (infallible once checked).

use serde::{Deserialize, Serialize};

use super::{NewMessage, TopicResponse, Topics};
use crate::state_machine::primitive::Ctx;
use crate::state_machine::transaction::OpResult;

/// A topic op of a transaction.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicOp {
    /// Publishes one message, as a Publish of it would (an idempotency key seen within the
    /// window answers the original sequence and stores nothing).
    Publish(NewMessage),
}

impl Topics {
    /// Checks the publish ops of one transaction (`(op index, op)`) without changing anything:
    /// each message as a Publish of it alone would be checked (its form, a topic capturing its
    /// subject, its topic's max_bytes), the first refusal naming its op; then all of them together
    /// against the store quota, as one Publish of them all (a refusal names the first publish).
    pub fn check_txn(
        &self,
        now_ms: u64,
        ops: &[(u32, &TopicOp)],
    ) -> Result<(), (u32, TopicResponse)> {
        let mut messages = Vec::with_capacity(ops.len());
        for &(index, TopicOp::Publish(message)) in ops {
            self.check_publish(now_ms, std::slice::from_ref(message))
                .map_err(|refusal| (index, TopicResponse::Refused(refusal)))?;
            messages.push(message.clone());
        }
        match ops.first() {
            Some(&(first, _)) => self
                .check_publish(now_ms, &messages)
                .map_err(|refusal| (first, TopicResponse::Refused(refusal))),
            None => Ok(()),
        }
    }

    /// Applies one topic op that `check_txn` passed.
    pub fn apply_txn(&mut self, ctx: &mut Ctx, op: &TopicOp) -> OpResult {
        let TopicOp::Publish(message) = op;
        let published = self
            .store_checked(ctx, std::slice::from_ref(message))
            .pop()
            .expect("one result per message stored");
        OpResult::Published {
            topic: published.topic,
            seq: published.seq,
            duplicate: published.duplicate,
        }
    }
}

// ---- The encoding contract (`format.rs`): each variant's tag. New variants are appended with the
// next code; any other change bumps LOG_FORMAT. ----

impl TopicOp {
    pub const fn code(&self) -> u16 {
        match self {
            TopicOp::Publish(_) => 0,
        }
    }
}
