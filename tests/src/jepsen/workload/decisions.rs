//! The decisions workload: proposers put questions to an electorate of raw-API agents under every
//! rule (majority, unanimous, at least k, weighted; some with a veto option; some naming an agent
//! that never registers) with deadlines of a few seconds, so some end without quorum; the voters
//! vote on the ballots their session streams push (seeded choices, now and then a second vote,
//! which must be refused); an outsider votes in decisions it is not part of; some decisions are
//! watched. After healing, every node lists the workload's decisions (serializable, after
//! convergence), and one linearizable listing follows.
//!
//! Recorded operations (f: invocation value -> ok value; a decision is recorded as [`snapshot`]):
//! - `propose`: the spec `{"tag", "rule", "k", "options", "veto", "electorate", "weights",
//!   "deadline"}` -> `{"tag", "id", "decision"}`, resent with its request id while unknown;
//! - `vote`: `{"id", "voter", "choice"}` -> the same with `"decision"` (the state after the vote);
//!   `fail` when refused (already voted, closed, not a voter, session not live), `info` unknown;
//! - `ballot` (an observation): `{"voter", "id"}`; `watch`: `{"id"}` -> `{"id", "states"}`;
//! - `register`, `drain`, and `final-read`: `{"consistency"}` -> `{"consistency", "read_unix_ms",
//!   "decisions"}`.
//!
//! The checker ([`check`], in `decisions/check.rs`), a pure function of the history, one
//! function per property (named in brackets):
//! - every final read lists the same decisions with the same votes, status and outcome
//!   (`reads_agree`);
//! - every acknowledged proposal is listed with its spec (`acknowledged_proposals_listed`),
//!   nothing is listed that was never proposed, or whose proposal provably failed, or with
//!   another spec (`listed_decisions_were_proposed`), no proposal is listed twice
//!   (`proposals_applied_once`), and a decision's voters are the agents its spec names
//!   (`electorates_are_the_named_agents`);
//! - each decision's outcome is valid under its rule, recomputed here from the listed votes, the
//!   weights, the veto option and the electorate: every vote was cast while the tally was open
//!   (`no_votes_after_the_tally_ended`, `votes_before_the_close`), DECIDED and REJECTED (veto,
//!   or no option can win any more) are what the tally says after the last vote, NO_QUORUM only
//!   when the tally is still open and the deadline had passed, OPEN only while undecided
//!   (`outcomes_follow_the_rule`), and not long after the deadline
//!   (`open_not_long_past_the_deadline`);
//! - no voter votes twice (`one_vote_per_voter`), nobody outside the electorate votes
//!   (`votes_from_the_electorate`), every vote is for an option (`votes_for_options`), every
//!   listed vote was cast by a vote that was invoked and not refused (`listed_votes_were_cast`),
//!   every vote acknowledged `ok` is listed (`accepted_votes_listed`) and is in the state its
//!   answer holds (`answers_hold_their_votes`); refusals agree with the final state: an "already
//!   voted" voter did vote, a "closed" decision is closed, a "not in the electorate" voter is not
//!   in it (`refusals_agree`);
//! - every other observation of a decision (propose and vote responses, watches) agrees with the
//!   final reads: its votes are a prefix of the final votes, and a closed state is the final one
//!   (`observations_agree`); the states a watch receives never lose votes
//!   (`watches_never_lose_votes`), and a watch ends by itself only once the decision is closed
//!   (`watches_end_closed`);
//! - ballots go only to voters of the decision (`ballots_go_to_voters`).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::decisions_client::DecisionsClient;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::{
    Decision, DecisionRule, DecisionSpec, DecisionStatus, Electorate, ListDecisionsRequest,
    ProposeRequest, ReadConsistency, VoteRequest, WatchDecisionRequest,
};
use futures::future::BoxFuture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom as _;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value as Json};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::agents::{
    classify, pace, read_final_state, run_agent, short_name, unix_ms, Actor, AgentConfig,
    AgentShared,
};
use super::{CheckResult, Tasks, Workload, FINAL_READ};
use crate::channel;
use crate::jepsen::client::{mix, Attempt, ClientContext};
use crate::jepsen::history::{Completion, Event, OpSpec};

mod check;

pub use self::check::{check, Tally};

pub const NAME: &str = "decisions";
/// Label on every decision of the workload (ListDecisions has no label filter: the reads filter).
pub const LABEL: &str = "jepsen-workload";
/// Label with the proposal's unique tag, which ties a listed decision to its proposal.
pub const TAG_LABEL: &str = "jepsen-tag";
/// An electorate member that never registers: unanimity (and some quorums) can then only end in
/// a rejection or at the deadline.
pub const GHOST: &str = "jepsen-ghost";
/// A registered agent that is in no electorate; its votes must be refused.
pub const OUTSIDER: &str = "jepsen-outsider";
/// The veto option, when a decision has one.
const VETO: &str = "veto";
const PAGE: u32 = 1000;
const DRAIN_POLL: Duration = Duration::from_millis(300);

/// An acknowledged proposal: its id and options.
type Proposed = (u64, Vec<String>);

#[derive(Clone, Debug)]
pub struct Options {
    pub voters: usize,
    /// Votes one voter may have in flight at once.
    pub voter_slots: usize,
    /// Session TTL of each agent, at random in this range (ms).
    pub ttl_ms: (u64, u64),
    /// A proposer's mean pause is this many times the run's `op_interval`.
    pub propose_pace: u32,
    /// Decision deadlines, this long after the proposal (ms, uniform).
    pub deadline_ms: (u64, u64),
    /// How long a voter thinks before voting (ms, uniform).
    pub vote_delay_ms: (u64, u64),
    /// Fraction of decisions watched from the proposal to the outcome.
    pub watch_fraction: f64,
    /// How long the drain waits for every decision to close after the heal.
    pub drain_bound: Duration,
    /// Chance that a voter freezes past its TTL when it moves its stream.
    pub freeze_probability: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            voters: 5,
            voter_slots: 3,
            ttl_ms: (2_000, 4_000),
            propose_pace: 20,
            deadline_ms: (1_500, 5_000),
            vote_delay_ms: (0, 1_200),
            watch_fraction: 0.3,
            drain_bound: Duration::from_secs(20),
            freeze_probability: 0.1,
        }
    }
}

pub struct DecisionsWorkload {
    options: Options,
    tags: Arc<AtomicU64>,
    /// Ids and options of acknowledged proposals, for the outsider.
    proposed: Arc<Mutex<Vec<Proposed>>>,
    /// Every voter's shared state, to tell them to stop freezing at the drain.
    shared: Mutex<Vec<Arc<AgentShared>>>,
    proposers: Tasks,
    agents: Tasks,
    jobs: Arc<Tasks>,
    agent_stop: watch::Sender<bool>,
    context: Mutex<Option<ClientContext>>,
}

impl DecisionsWorkload {
    pub fn new(options: Options) -> Self {
        Self {
            options,
            tags: Arc::new(AtomicU64::new(1)),
            proposed: Arc::default(),
            shared: Mutex::default(),
            proposers: Tasks::default(),
            agents: Tasks::default(),
            jobs: Arc::new(Tasks::default()),
            agent_stop: watch::Sender::new(false),
            context: Mutex::new(None),
        }
    }

    fn context(&self) -> Option<ClientContext> {
        self.context
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn voter_names(&self) -> Vec<String> {
        (0..self.options.voters)
            .map(|n| format!("jepsen-voter-{n}"))
            .collect()
    }

    /// One voter: votes on every ballot once (twice now and then, to be refused).
    fn start_voter(&self, context: &ClientContext, number: usize, name: String, node: u64) {
        let mut rng = StdRng::seed_from_u64(mix(context.seed, &[0xde5c, number as u64]));
        let config = AgentConfig {
            name: name.clone(),
            capabilities: vec!["jepsen-voter".to_string()],
            max_concurrent: 1,
            ttl_ms: rng.gen_range(self.options.ttl_ms.0..=self.options.ttl_ms.1),
            breaker_failures: 0,
            breaker_cooldown_ms: 0,
            freeze_probability: self.options.freeze_probability,
        };
        let shared = Arc::new(AgentShared::default());
        self.shared
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&shared));
        let observer = Actor::new(context, node);
        let slots: Arc<Mutex<Vec<Actor>>> = Arc::new(Mutex::new(
            (0..self.options.voter_slots)
                .map(|_| Actor::new(context, node))
                .collect(),
        ));
        // Decisions this voter has taken up: a ballot pushed again after a reconnect is one.
        let taken: Arc<Mutex<HashSet<u64>>> = Arc::default();
        let mut choices = StdRng::seed_from_u64(mix(context.seed, &[0xde5d, number as u64]));
        let handler_context = context.clone();
        let jobs = Arc::clone(&self.jobs);
        let delay = self.options.vote_delay_ms;
        let handler_shared = Arc::clone(&shared);
        let handler = move |_session: u64,
                            stream_node: u64,
                            event: conclave_proto::v1::SessionEvent| {
            let Some(EventKind::Ballot(ballot)) = event.kind else {
                return;
            };
            let Some(decision) = ballot.decision else {
                return;
            };
            if !taken
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(decision.id)
            {
                return;
            }
            let context = handler_context.clone();
            observer.observe(
                &context,
                "ballot",
                stream_node,
                json!({"voter": name, "id": decision.id}),
            );
            let plan = VotePlan::choose(&mut choices, &decision, delay);
            let slots = Arc::clone(&slots);
            let taken = Arc::clone(&taken);
            let shared = Arc::clone(&handler_shared);
            let name = name.clone();
            jobs.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(plan.delay_ms)).await;
                let taken_slot = slots.lock().unwrap_or_else(PoisonError::into_inner).pop();
                let mut actor = taken_slot.unwrap_or_else(|| Actor::new(&context, stream_node));
                // A frozen voter votes when it thaws, with the session it had.
                shared.thaw().await;
                let session_id = shared.session();
                let first = vote(
                    &mut actor,
                    &context,
                    &name,
                    session_id,
                    decision.id,
                    &plan.choice,
                )
                .await;
                match &first {
                    Completion::Fail(error) if error.contains("is not live") || session_id == 0 => {
                        // The ballot comes again on the next session's stream.
                        taken
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&decision.id);
                    }
                    Completion::Ok(_) => {
                        if let Some(second) = &plan.second {
                            vote(&mut actor, &context, &name, session_id, decision.id, second)
                                .await;
                        }
                    }
                    _ => {}
                }
                slots
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(actor);
            }));
        };
        self.agents.push(tokio::spawn(run_agent(
            context.clone(),
            config,
            Actor::new(context, node),
            rng,
            self.agent_stop.subscribe(),
            shared,
            handler,
        )));
    }

    /// The outsider: registered, in no electorate, voting in random decisions now and then.
    fn start_outsider(&self, context: &ClientContext, node: u64) {
        let rng = StdRng::seed_from_u64(mix(context.seed, &[0xde5e]));
        let config = AgentConfig {
            name: OUTSIDER.to_string(),
            capabilities: vec!["jepsen-voter".to_string()],
            max_concurrent: 1,
            ttl_ms: 3_000,
            breaker_failures: 0,
            breaker_cooldown_ms: 0,
            freeze_probability: 0.0,
        };
        let shared = Arc::new(AgentShared::default());
        self.agents.push(tokio::spawn(run_agent(
            context.clone(),
            config,
            Actor::new(context, node),
            rng,
            self.agent_stop.subscribe(),
            Arc::clone(&shared),
            |_, _, _| {},
        )));
        let context = context.clone();
        let proposed = Arc::clone(&self.proposed);
        let interval = context.op_interval * self.options.propose_pace;
        self.proposers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(mix(context.seed, &[0xde5f]));
            let mut stop = context.stop.clone();
            let mut actor = Actor::new(&context, node);
            while !pace(&mut stop, &mut rng, interval).await {
                let session_id = shared.session();
                let picked = proposed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .choose(&mut rng)
                    .cloned();
                if let (Some((id, options)), true) = (picked, session_id != 0) {
                    let choice = options.choose(&mut rng).cloned().unwrap_or_default();
                    vote(&mut actor, &context, OUTSIDER, session_id, id, &choice).await;
                }
            }
        }));
    }

    /// Waits (bounded) until every decision of the workload is closed, recorded as `drain`.
    async fn wait_for_closed(&self, context: &ClientContext) {
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let process = context.recorder.new_process();
        let bound_ms = self.options.drain_bound.as_millis() as u64;
        let spec = OpSpec::new("drain", None, json!({"bound_ms": bound_ms}));
        let invocation = context
            .recorder
            .invoke(context.workload, process, None, spec);
        let started = Instant::now();
        let actor = Actor::new(context, nodes[0]);
        for attempt in 0.. {
            let node = nodes[attempt % nodes.len()];
            let last = match list(actor.channel(node), ReadConsistency::Linearizable).await {
                Ok(decisions) => {
                    let open: Vec<u64> = decisions
                        .iter()
                        .filter(|d| d.status == DecisionStatus::Open as i32)
                        .map(|d| d.id)
                        .collect();
                    if open.is_empty() {
                        let value = json!({
                            "closed": true,
                            "decisions": decisions.len(),
                            "waited_ms": started.elapsed().as_millis() as u64,
                        });
                        context
                            .recorder
                            .complete(&invocation, &Completion::Ok(value));
                        return;
                    }
                    format!(
                        "{} of {} decisions open, e.g. {:?}",
                        open.len(),
                        decisions.len(),
                        &open[..open.len().min(5)]
                    )
                }
                Err(error) => format!("node {node}: {error}"),
            };
            if started.elapsed() >= self.options.drain_bound {
                tracing::warn!("decisions drain: bound reached: {last}");
                let value = json!({"closed": false, "last": last});
                context
                    .recorder
                    .complete(&invocation, &Completion::Ok(value));
                return;
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
    }
}

impl Default for DecisionsWorkload {
    fn default() -> Self {
        Self::new(Options::default())
    }
}

impl Workload for DecisionsWorkload {
    fn name(&self) -> &'static str {
        NAME
    }

    fn start(&self, context: ClientContext) {
        *self.context.lock().unwrap_or_else(PoisonError::into_inner) = Some(context.clone());
        let nodes: Vec<u64> = context.nodes.keys().copied().collect();
        let voters = self.voter_names();
        for (number, name) in voters.iter().enumerate() {
            self.start_voter(&context, number, name.clone(), nodes[number % nodes.len()]);
        }
        self.start_outsider(&context, nodes[nodes.len() - 1]);
        let interval = context.op_interval * self.options.propose_pace;
        for (number, &node) in nodes.iter().enumerate() {
            let context = context.clone();
            let tags = Arc::clone(&self.tags);
            let proposed = Arc::clone(&self.proposed);
            let jobs = Arc::clone(&self.jobs);
            let voters = voters.clone();
            let options = self.options.clone();
            self.proposers.push(tokio::spawn(async move {
                let mut rng = context.rng(number as u64);
                let mut stop = context.stop.clone();
                let mut actor = Actor::new(&context, node);
                while !pace(&mut stop, &mut rng, interval).await {
                    let tag = tags.fetch_add(1, Ordering::Relaxed);
                    let spec = Proposal::choose(&mut rng, tag, &voters, &options);
                    let Some(id) = propose(&mut actor, &context, &spec).await else {
                        continue;
                    };
                    proposed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((id, spec.options.clone()));
                    if rng.gen_bool(options.watch_fraction) {
                        let watch_node = **context
                            .nodes
                            .keys()
                            .collect::<Vec<_>>()
                            .choose(&mut rng)
                            .expect("nodes");
                        let bound =
                            Duration::from_millis(options.deadline_ms.1) + 3 * context.op_timeout;
                        jobs.push(tokio::spawn(watch_decision(
                            context.clone(),
                            watch_node,
                            id,
                            bound,
                        )));
                    }
                }
            }));
        }
    }

    fn drain(&self) -> BoxFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let Some(context) = self.context() else {
                return Ok(());
            };
            self.proposers.drain(context.op_timeout).await?;
            for shared in self
                .shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
            {
                shared.behave.store(true, Ordering::SeqCst);
            }
            self.wait_for_closed(&context).await;
            self.agent_stop.send_replace(true);
            self.agents.drain(context.op_timeout).await?;
            self.jobs.drain(context.op_timeout).await
        })
    }

    fn final_reads<'a>(&'a self, context: &'a ClientContext) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            read_final_state(context, |actor, context, node, consistency| {
                Box::pin(final_read(actor, context, node, consistency))
            })
            .await;
            Ok(())
        })
    }

    fn check(&self, events: &[Event], _budget: Duration) -> CheckResult {
        check(events)
    }
}

/// A proposal as the proposer makes it up, and as the history records it.
#[derive(Clone, Debug, PartialEq)]
struct Proposal {
    tag: u64,
    rule: String,
    k: u64,
    options: Vec<String>,
    veto: Option<String>,
    /// Named agents, sorted.
    electorate: Vec<String>,
    weights: BTreeMap<String, u64>,
    deadline: u64,
}

impl Proposal {
    fn choose(rng: &mut StdRng, tag: u64, voters: &[String], options: &Options) -> Self {
        let size = rng.gen_range(3.min(voters.len())..=voters.len());
        let mut electorate: Vec<String> = voters.choose_multiple(rng, size).cloned().collect();
        if rng.gen_bool(0.15) {
            electorate.push(GHOST.to_string());
        }
        electorate.sort();
        let mut choices: Vec<String> = if rng.gen_bool(0.5) {
            vec!["yes".into(), "no".into()]
        } else {
            vec!["red".into(), "green".into(), "blue".into()]
        };
        let veto = rng.gen_bool(0.25).then(|| VETO.to_string());
        if let Some(veto) = &veto {
            choices.push(veto.clone());
        }
        let rule = ["MAJORITY", "UNANIMOUS", "AT_LEAST", "WEIGHTED"][rng.gen_range(0..4)];
        let k = if rule == "AT_LEAST" {
            rng.gen_range(1..=electorate.len() as u64)
        } else {
            0
        };
        let weights = if rule == "WEIGHTED" {
            let mut weights = BTreeMap::new();
            for voter in &electorate {
                if rng.gen_bool(0.8) {
                    weights.insert(voter.clone(), rng.gen_range(1..=5));
                }
            }
            weights
        } else {
            BTreeMap::new()
        };
        let deadline = unix_ms() + rng.gen_range(options.deadline_ms.0..=options.deadline_ms.1);
        Self {
            tag,
            rule: rule.to_string(),
            k,
            options: choices,
            veto,
            electorate,
            weights,
            deadline,
        }
    }

    fn to_json(&self) -> Json {
        json!({
            "tag": self.tag,
            "rule": self.rule,
            "k": self.k,
            "options": self.options,
            "veto": self.veto,
            "electorate": self.electorate,
            "weights": self.weights,
            "deadline": self.deadline,
        })
    }

    fn from_json(value: &Json) -> Option<Self> {
        let strings = |value: &Json| -> Option<Vec<String>> {
            value
                .as_array()?
                .iter()
                .map(|item| item.as_str().map(str::to_string))
                .collect()
        };
        Some(Self {
            tag: value["tag"].as_u64()?,
            rule: value["rule"].as_str()?.to_string(),
            k: value["k"].as_u64()?,
            options: strings(&value["options"])?,
            veto: value["veto"].as_str().map(str::to_string),
            electorate: strings(&value["electorate"])?,
            weights: value["weights"]
                .as_object()?
                .iter()
                .map(|(voter, weight)| Some((voter.clone(), weight.as_u64()?)))
                .collect::<Option<_>>()?,
            deadline: value["deadline"].as_u64()?,
        })
    }

    fn request(&self) -> DecisionSpec {
        let rule = match self.rule.as_str() {
            "UNANIMOUS" => DecisionRule::Unanimous,
            "AT_LEAST" => DecisionRule::AtLeast,
            "WEIGHTED" => DecisionRule::Weighted,
            _ => DecisionRule::Majority,
        };
        DecisionSpec {
            question: format!("jepsen question {}", self.tag),
            options: self.options.clone(),
            electorate: Some(Electorate {
                agents: self.electorate.clone(),
                capability: String::new(),
            }),
            rule: rule as i32,
            k: self.k as u32,
            weights: self.weights.clone().into_iter().collect(),
            veto_option: self.veto.clone().unwrap_or_default(),
            deadline_unix_ms: self.deadline,
            labels: [
                (LABEL.to_string(), NAME.to_string()),
                (TAG_LABEL.to_string(), self.tag.to_string()),
            ]
            .into_iter()
            .collect(),
        }
    }
}

/// How one voter votes in one decision.
struct VotePlan {
    delay_ms: u64,
    choice: String,
    /// A second vote, which must be refused.
    second: Option<String>,
}

impl VotePlan {
    fn choose(rng: &mut StdRng, decision: &Decision, delay_ms: (u64, u64)) -> Self {
        let spec = decision.spec.clone().unwrap_or_default();
        let veto = (!spec.veto_option.is_empty()).then_some(spec.veto_option.clone());
        let options: Vec<String> = spec
            .options
            .iter()
            .filter(|option| Some(*option) != veto.as_ref())
            .cloned()
            .collect();
        // Voters lean towards one option per decision, so that decisions get decided.
        let favourite = options
            .get(decision.id as usize % options.len().max(1))
            .cloned()
            .unwrap_or_default();
        let choice = match &veto {
            Some(veto) if rng.gen_bool(0.08) => veto.clone(),
            _ if rng.gen_bool(0.65) => favourite,
            _ => options.choose(rng).cloned().unwrap_or_default(),
        };
        let second = rng
            .gen_bool(0.1)
            .then(|| spec.options.choose(rng).cloned())
            .flatten();
        Self {
            delay_ms: rng.gen_range(delay_ms.0..=delay_ms.1),
            choice,
            second,
        }
    }
}

/// Proposes `proposal`; the decision id if acknowledged.
async fn propose(actor: &mut Actor, context: &ClientContext, proposal: &Proposal) -> Option<u64> {
    let request = ProposeRequest {
        request_id: actor.next_request_id(),
        decision: Some(proposal.request()),
    };
    let tag = proposal.tag;
    let spec = OpSpec::new("propose", None, proposal.to_json());
    let completion = actor
        .write(context, spec, |channel| {
            let request = request.clone();
            async move {
                match DecisionsClient::new(channel).propose(request).await {
                    Ok(response) => match response.into_inner().decision {
                        Some(decision) => Attempt::Ok(json!({
                            "tag": tag,
                            "id": decision.id,
                            "decision": snapshot(&decision),
                        })),
                        None => Attempt::Unknown("Propose answered without a decision".into()),
                    },
                    Err(status) => classify(&status),
                }
            }
        })
        .await;
    match completion {
        Completion::Ok(value) => value["id"].as_u64(),
        _ => None,
    }
}

/// Votes `choice` as `voter` through its session, recorded as `vote` (also by the tasks
/// workload, for its gating decisions).
pub(crate) async fn vote(
    actor: &mut Actor,
    context: &ClientContext,
    voter: &str,
    session_id: u64,
    decision_id: u64,
    choice: &str,
) -> Completion {
    let request = VoteRequest {
        request_id: actor.next_request_id(),
        session_id,
        decision_id,
        choice: choice.to_string(),
        rationale: format!("{voter} thinks {choice}"),
    };
    let value = json!({"id": decision_id, "voter": voter, "choice": choice});
    let spec = OpSpec::new("vote", None, value.clone());
    actor
        .write(context, spec, |channel| {
            let request = request.clone();
            let value = value.clone();
            async move {
                match AgentsClient::new(channel).vote(request).await {
                    Ok(response) => {
                        let mut value = value;
                        value["decision"] = response
                            .into_inner()
                            .decision
                            .as_ref()
                            .map_or(Json::Null, snapshot);
                        Attempt::Ok(value)
                    }
                    Err(status) => classify(&status),
                }
            }
        })
        .await
}

/// Watches one decision on `node` until the stream ends (after the outcome) or `bound` passes,
/// recorded as one `watch` operation with every state received.
async fn watch_decision(context: ClientContext, node: u64, decision_id: u64, bound: Duration) {
    let process = context.recorder.new_process();
    let spec = OpSpec::new("watch", None, json!({"id": decision_id}));
    let invocation = context
        .recorder
        .invoke(context.workload, process, Some(node), spec);
    let mut states = Vec::new();
    let error = tokio::time::timeout(bound, async {
        let mut client = DecisionsClient::new(channel::channel(context.nodes[&node], None));
        let mut stream = client
            .watch_decision(WatchDecisionRequest { decision_id })
            .await
            .map_err(|status| crate::jepsen::client::describe(&status))?
            .into_inner();
        loop {
            match stream.message().await {
                Ok(Some(event)) => {
                    if let Some(decision) = event.decision {
                        states.push(snapshot(&decision));
                    }
                }
                Ok(None) => return Ok(()),
                Err(status) => return Err(crate::jepsen::client::describe(&status)),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err(format!("no end within {bound:?}")))
    .err();
    let mut value = json!({"id": decision_id, "states": states});
    if let Some(error) = error {
        value["error"] = json!(error);
    }
    context
        .recorder
        .complete(&invocation, &Completion::Ok(value));
}

/// Every decision of the workload (by its label), all pages.
async fn list(channel: Channel, consistency: ReadConsistency) -> Result<Vec<Decision>, String> {
    let mut client = DecisionsClient::new(channel);
    let mut decisions: Vec<Decision> = Vec::new();
    let mut after_id = 0;
    loop {
        let request = ListDecisionsRequest {
            statuses: Vec::new(),
            limit: PAGE,
            after_id,
            consistency: consistency as i32,
        };
        let page = client
            .list_decisions(request)
            .await
            .map_err(|status| crate::jepsen::client::describe(&status))?
            .into_inner();
        let last = page.decisions.last().map_or(after_id, |d| d.id);
        decisions.extend(page.decisions.into_iter().filter(|decision| {
            decision
                .spec
                .as_ref()
                .and_then(|spec| spec.labels.get(LABEL))
                .is_some_and(|value| value == NAME)
        }));
        if !page.more {
            return Ok(decisions);
        }
        if last <= after_id {
            return Err("ListDecisions did not advance".to_string());
        }
        after_id = last;
    }
}

async fn final_read(
    actor: &mut Actor,
    context: &ClientContext,
    node: u64,
    consistency: ReadConsistency,
) -> bool {
    let name = match consistency {
        ReadConsistency::Linearizable => "linearizable",
        _ => "serializable",
    };
    let spec = OpSpec::new(FINAL_READ, None, json!({"consistency": name}));
    let completion = actor
        .read(context, spec, node, |channel| async move {
            let decisions = list(channel, consistency).await?;
            Ok(json!({
                "consistency": name,
                "read_unix_ms": unix_ms(),
                "decisions": decisions.iter().map(snapshot).collect::<Vec<_>>(),
            }))
        })
        .await;
    matches!(completion, Completion::Ok(_))
}

/// A decision as the history records it: its spec (as a [`Proposal`]), its electorate, votes,
/// status and outcome.
pub fn snapshot(decision: &Decision) -> Json {
    let spec = decision.spec.clone().unwrap_or_default();
    let rule = DecisionRule::try_from(spec.rule).map_or_else(
        |_| format!("UNKNOWN({})", spec.rule),
        |rule| short_name(rule.as_str_name(), "DECISION_RULE_"),
    );
    let status = DecisionStatus::try_from(decision.status).map_or_else(
        |_| format!("UNKNOWN({})", decision.status),
        |status| short_name(status.as_str_name(), "DECISION_STATUS_"),
    );
    let weights: BTreeMap<String, u64> = spec.weights.clone().into_iter().collect();
    let mut electorate = spec.electorate.clone().unwrap_or_default().agents;
    electorate.sort();
    let votes: Vec<Json> = decision
        .votes
        .iter()
        .map(|vote| json!([vote.voter, vote.choice, vote.cast_unix_ms]))
        .collect();
    json!({
        "id": decision.id,
        "spec": {
            "tag": spec.labels.get(TAG_LABEL).and_then(|tag| tag.parse::<u64>().ok()),
            "rule": rule,
            "k": spec.k,
            "options": spec.options,
            "veto": (!spec.veto_option.is_empty()).then_some(spec.veto_option.clone()),
            "electorate": electorate,
            "weights": weights,
            "deadline": spec.deadline_unix_ms,
        },
        "voters": decision.voters,
        "status": status,
        "outcome": decision.outcome,
        "votes": votes,
        "closed": decision.closed_unix_ms,
    })
}
