//! Decision calls (decisions.proto): propose, read, list and watch quorum votes among agents.
//! Votes are cast from an agent's session: [`Client::vote`] and [`crate::AgentSession::vote`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use conclave_proto::limits::{
    MAX_DECISION_DEADLINE_MS, MAX_ELECTORATE, MAX_OPTIONS, MAX_SHORT_STRING_BYTES, MAX_WEIGHT,
};
use conclave_proto::v1::decisions_client::DecisionsClient;
use conclave_proto::v1::{
    self as proto, Decision, DecisionRule, DecisionSpec, DecisionStatus, GetDecisionRequest,
    ListDecisionsRequest, ProposeRequest, ReadConsistency, WatchDecisionRequest,
};
use conclave_proto::validate;
use futures::stream::{BoxStream, Stream, StreamExt};
use tonic::codec::Streaming;
use tonic::transport::Channel;

use crate::client::{served_by_header, CallKind, Client, MAX_RESPONSE_BYTES};
use crate::endpoint::Node;
use crate::error::{describe, Error, Result};
use crate::feed::{IDLE_CHECK, STREAM_END_PAUSE};
use crate::kv::Header;
use crate::stream::{is_final, open_stream};
use crate::tasks::{check_page_limit, missing};

/// A decision as read or proposed.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionRead {
    pub header: Header,
    pub decision: Decision,
}

/// What [`Client::list_decisions`] selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionListOptions {
    /// Only these statuses (empty: all).
    pub statuses: Vec<DecisionStatus>,
    /// Page size, 1 ..= 1000; 0 means 100.
    pub limit: u32,
    pub after_id: u64,
    pub consistency: ReadConsistency,
}

impl Default for DecisionListOptions {
    fn default() -> Self {
        DecisionListOptions {
            statuses: Vec::new(),
            limit: 0,
            after_id: 0,
            consistency: ReadConsistency::Linearizable,
        }
    }
}

/// One page of decisions, in id order.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionPage {
    pub header: Header,
    pub decisions: Vec<Decision>,
    /// True when more follow; continue with `after_id = next_after_id`.
    pub more: bool,
    pub next_after_id: u64,
}

impl Client {
    /// Proposes a decision; its ballots go to the electorate's sessions at once.
    pub async fn propose(&self, spec: DecisionSpec) -> Result<DecisionRead> {
        check_decision_spec(&spec)?;
        let pending = self.begin_write();
        let response = self
            .call(CallKind::Write, |channel| {
                let request = ProposeRequest {
                    request_id: Some(pending.request_id()),
                    decision: Some(spec.clone()),
                };
                async move { decisions(channel).propose(request).await }
            })
            .await?;
        Ok(DecisionRead {
            header: response.header.into(),
            decision: response.decision.ok_or_else(|| missing("decision"))?,
        })
    }

    /// Reads one decision linearizably; an unknown id is `Rejected { code: NotFound }`.
    pub async fn get_decision(&self, decision_id: u64) -> Result<DecisionRead> {
        self.get_decision_with(decision_id, ReadConsistency::Linearizable)
            .await
    }

    /// Reads one decision with the given consistency.
    pub async fn get_decision_with(
        &self,
        decision_id: u64,
        consistency: ReadConsistency,
    ) -> Result<DecisionRead> {
        check_decision_id(decision_id)?;
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = GetDecisionRequest {
                    decision_id,
                    consistency: consistency.into(),
                };
                async move { decisions(channel).get_decision(request).await }
            })
            .await?;
        Ok(DecisionRead {
            header: response.header.into(),
            decision: response.decision.ok_or_else(|| missing("decision"))?,
        })
    }

    /// Reads one page of decisions in id order.
    pub async fn list_decisions(&self, options: DecisionListOptions) -> Result<DecisionPage> {
        check_page_limit(options.limit)?;
        let consistency = options.consistency;
        let request = ListDecisionsRequest {
            statuses: options.statuses.into_iter().map(i32::from).collect(),
            limit: options.limit,
            after_id: options.after_id,
            consistency: consistency.into(),
        };
        let response = self
            .call(CallKind::Read(consistency), |channel| {
                let request = request.clone();
                async move { decisions(channel).list_decisions(request).await }
            })
            .await?;
        let next_after_id = response.decisions.last().map_or(0, |d| d.id);
        Ok(DecisionPage {
            header: response.header.into(),
            decisions: response.decisions,
            more: response.more,
            next_after_id,
        })
    }

    /// Watches one decision: yields its current state first, then its state after every accepted
    /// vote, and ends after the outcome. Survives node failures (a reconnect reads the current
    /// state again; a state equal to the last one delivered is not repeated).
    pub async fn watch_decision(&self, decision_id: u64) -> Result<DecisionStream> {
        check_decision_id(decision_id)?;
        let mut watcher = DecisionWatcher {
            client: self.clone(),
            decision_id,
            stream: None,
            pending: None,
            last: None,
            done: false,
        };
        watcher.open().await?;
        let inner = futures::stream::unfold(watcher, |mut watcher| async move {
            let item = watcher.next().await?;
            Some((item, watcher))
        })
        .boxed();
        Ok(DecisionStream { inner })
    }
}

/// The states of one decision, ending after its outcome (or after an error).
pub struct DecisionStream {
    inner: BoxStream<'static, Result<Decision>>,
}

impl std::fmt::Debug for DecisionStream {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DecisionStream")
            .finish_non_exhaustive()
    }
}

impl Stream for DecisionStream {
    type Item = Result<Decision>;

    fn poll_next(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(context)
    }
}

struct DecisionWatcher {
    client: Client,
    decision_id: u64,
    stream: Option<(Arc<Node>, Streaming<proto::DecisionEvent>)>,
    /// The state read right after a stream opened, not yet delivered.
    pending: Option<Decision>,
    /// What was last delivered: (status, number of votes).
    last: Option<(i32, usize)>,
    done: bool,
}

impl DecisionWatcher {
    /// Opens a stream, then reads the current state: a change between the two arrives on the
    /// stream, so none is lost, and a decision closed before the watch began is still reported.
    async fn open(&mut self) -> Result<()> {
        let decision_id = self.decision_id;
        let opened = open_stream(&self.client, "decision watch", |channel| async move {
            decisions(channel)
                .watch_decision(WatchDecisionRequest { decision_id })
                .await
        })
        .await?;
        self.stream = Some(opened);
        self.pending = Some(self.client.get_decision(decision_id).await?.decision);
        Ok(())
    }

    /// Returns `decision` unless it repeats the last state delivered; ends the watch at an outcome.
    fn deliver(&mut self, decision: Decision) -> Option<Decision> {
        let key = (decision.status, decision.votes.len());
        if self.last == Some(key) {
            return None;
        }
        self.last = Some(key);
        if decision.status() != DecisionStatus::Open {
            self.done = true;
        }
        Some(decision)
    }

    async fn next(&mut self) -> Option<Result<Decision>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(decision) = self.pending.take() {
                if let Some(decision) = self.deliver(decision) {
                    return Some(Ok(decision));
                }
                continue;
            }
            if self.stream.is_none() {
                if let Err(error) = self.open().await {
                    self.done = true;
                    return Some(Err(error));
                }
                continue;
            }
            let (node, stream) = self.stream.as_mut().expect("opened above");
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
                    if let Some(decision) = event.decision.and_then(|d| self.deliver(d)) {
                        return Some(Ok(decision));
                    }
                }
                // The server ends the stream after the outcome; if this one ended before we saw
                // it, the reopen reads the state and finds out.
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

/// A Decisions stub on `channel`, accepting responses up to the client's bound.
fn decisions(channel: Channel) -> DecisionsClient<Channel> {
    DecisionsClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES)
}

pub(crate) fn check_decision_id(decision_id: u64) -> Result<()> {
    if decision_id == 0 {
        return Err(Error::invalid_input("decision id 0 does not exist"));
    }
    Ok(())
}

/// Checks a decision spec against the limits of decisions.proto.
pub(crate) fn check_decision_spec(spec: &DecisionSpec) -> Result<()> {
    validate::message("question", &spec.question)?;
    if spec.options.len() < 2 || spec.options.len() > MAX_OPTIONS {
        return Err(Error::invalid_input(format!(
            "{} options; a decision has 2 ..= {MAX_OPTIONS}",
            spec.options.len()
        )));
    }
    for (index, option) in spec.options.iter().enumerate() {
        validate::short_string("option", option)?;
        if spec.options[..index].contains(option) {
            return Err(Error::invalid_input(format!(
                "option {option:?} is given twice"
            )));
        }
    }
    if !spec.veto_option.is_empty() && !spec.options.contains(&spec.veto_option) {
        return Err(Error::invalid_input(format!(
            "veto option {:?} is not one of the options",
            spec.veto_option
        )));
    }
    let electorate = spec.electorate.clone().unwrap_or_default();
    match (
        electorate.agents.is_empty(),
        electorate.capability.is_empty(),
    ) {
        (true, true) => {
            return Err(Error::invalid_input(
                "an electorate needs agents or a capability",
            ))
        }
        (false, false) => {
            return Err(Error::invalid_input(
                "an electorate is either named agents or a capability, not both",
            ))
        }
        _ => {}
    }
    if electorate.agents.len() > MAX_ELECTORATE {
        return Err(Error::invalid_input(format!(
            "{} voters; the limit is {MAX_ELECTORATE}",
            electorate.agents.len()
        )));
    }
    for agent in &electorate.agents {
        validate::name("voter", agent)?;
    }
    validate::max_bytes(
        "capability",
        electorate.capability.as_bytes(),
        MAX_SHORT_STRING_BYTES,
        "MAX_SHORT_STRING_BYTES",
    )?;
    if spec.rule() == DecisionRule::AtLeast {
        let voters = electorate.agents.len();
        if spec.k == 0 || (voters > 0 && spec.k as usize > voters) {
            return Err(Error::invalid_input(format!(
                "k is {}; it must be within 1 ..= the electorate's size",
                spec.k
            )));
        }
    }
    for (voter, weight) in &spec.weights {
        if *weight == 0 || *weight > MAX_WEIGHT {
            return Err(Error::invalid_input(format!(
                "weight of {voter:?} is {weight}; weights are 1 ..= {MAX_WEIGHT}"
            )));
        }
    }
    if spec.deadline_unix_ms != 0 {
        let now = crate::time::unix_ms_now();
        if spec.deadline_unix_ms > now + MAX_DECISION_DEADLINE_MS {
            return Err(Error::invalid_input(
                "the deadline is more than 7 days away",
            ));
        }
    }
    validate::labels("labels", &spec.labels)?;
    Ok(())
}

served_by_header!(
    proto::ProposeResponse,
    proto::GetDecisionResponse,
    proto::ListDecisionsResponse,
);

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::v1::Electorate;

    fn spec() -> DecisionSpec {
        DecisionSpec {
            question: "ship it?".to_string(),
            options: vec!["yes".to_string(), "no".to_string()],
            electorate: Some(Electorate {
                agents: vec!["a".to_string(), "b".to_string()],
                capability: String::new(),
            }),
            ..DecisionSpec::default()
        }
    }

    #[test]
    fn specs_are_checked_against_the_limits() {
        assert!(check_decision_spec(&spec()).is_ok());
        let mut one_option = spec();
        one_option.options.truncate(1);
        assert!(check_decision_spec(&one_option).is_err());
        let mut duplicate = spec();
        duplicate.options.push("yes".to_string());
        assert!(check_decision_spec(&duplicate).is_err());
        let mut veto = spec();
        veto.veto_option = "maybe".to_string();
        assert!(check_decision_spec(&veto).is_err());
        let mut nobody = spec();
        nobody.electorate = None;
        assert!(check_decision_spec(&nobody).is_err());
        let mut at_least = spec();
        at_least.rule = DecisionRule::AtLeast.into();
        at_least.k = 3;
        assert!(check_decision_spec(&at_least).is_err());
        at_least.k = 2;
        assert!(check_decision_spec(&at_least).is_ok());
        let mut weights = spec();
        weights.weights.insert("a".to_string(), 0);
        assert!(check_decision_spec(&weights).is_err());
    }
}
