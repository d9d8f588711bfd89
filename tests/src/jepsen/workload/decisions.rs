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
//! The checker ([`check`]), a pure function of the history:
//! - every final read lists the same decisions with the same votes, status and outcome;
//! - every acknowledged proposal is listed with its spec, nothing is listed that was never
//!   proposed (or whose proposal provably failed), and no proposal is listed twice;
//! - each decision's outcome is valid under its rule, recomputed here from the listed votes, the
//!   weights, the veto option and the electorate: every vote was cast while the tally was open,
//!   DECIDED and REJECTED (veto, or no option can win any more) are what the tally says after the
//!   last vote, NO_QUORUM only when the tally is still open and the deadline had passed, OPEN
//!   only while undecided (and not long after the deadline);
//! - no voter votes twice, nobody outside the electorate votes, every listed vote was cast by a
//!   vote that was invoked (and not refused), every vote acknowledged `ok` is listed; refusals
//!   agree with the final state (an "already voted" voter did vote, a "closed" decision is closed,
//!   a "not in the electorate" voter is not in it);
//! - every other observation of a decision (propose and vote responses, watches) agrees with the
//!   final reads: its votes are a prefix of the final votes, and a closed state is the final one;
//! - ballots go only to voters of the decision.

use std::collections::{BTreeMap, BTreeSet, HashSet};
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
use super::{CheckResult, Tasks, Verdict, Workload, FINAL_READ};
use crate::channel;
use crate::jepsen::client::{mix, Attempt, ClientContext};
use crate::jepsen::history::{pair, Completion, Event, OpKind, OpSpec};

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
/// A decision still OPEN this long after its deadline, in a final read, is a finding: the
/// deadline timer did not fire on a healed cluster.
const OPEN_PAST_DEADLINE_MS: u64 = 10_000;

/// An acknowledged proposal: its id and options.
type Proposed = (u64, Vec<String>);

/// A final read: node, consistency, completion index, when it was read (Unix ms), decisions.
type FinalRead = (Option<u64>, String, u64, u64, BTreeMap<u64, Seen>);

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

/// A decision as recorded by [`snapshot`], parsed back.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    id: u64,
    spec: Proposal,
    voters: Vec<String>,
    status: String,
    outcome: String,
    /// (voter, choice, cast_unix_ms), in the order accepted.
    votes: Vec<(String, String, u64)>,
    closed: u64,
}

impl Seen {
    fn parse(value: &Json) -> Option<Self> {
        let mut spec = value["spec"].clone();
        if spec["tag"].is_null() {
            spec["tag"] = json!(0);
        }
        Some(Self {
            id: value["id"].as_u64()?,
            spec: Proposal::from_json(&spec)?,
            voters: value["voters"]
                .as_array()?
                .iter()
                .map(|voter| voter.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
            status: value["status"].as_str()?.to_string(),
            outcome: value["outcome"].as_str()?.to_string(),
            votes: value["votes"]
                .as_array()?
                .iter()
                .map(|vote| {
                    Some((
                        vote[0].as_str()?.to_string(),
                        vote[1].as_str()?.to_string(),
                        vote[2].as_u64()?,
                    ))
                })
                .collect::<Option<_>>()?,
            closed: value["closed"].as_u64()?,
        })
    }

    /// The (voter, choice) pairs, for the tally.
    fn choices(&self) -> Vec<(&str, &str)> {
        self.votes
            .iter()
            .map(|(voter, choice, _)| (voter.as_str(), choice.as_str()))
            .collect()
    }
}

/// What the rule says about a decision given the votes so far (decisions.proto).
#[derive(Clone, Debug, PartialEq)]
pub enum Tally {
    Open,
    Decided(String),
    Rejected,
}

/// The tally of `votes` (voter, choice, in the order accepted) under `spec` with electorate
/// `voters`, from the rules in decisions.proto: a vote for the veto option rejects; MAJORITY and
/// WEIGHTED need more than half of the electorate's (weighted) votes, AT_LEAST k votes, UNANIMOUS
/// every voter on one option; when no option can get there whatever the voters who have not
/// voted do, the decision is rejected. Written from the API's text, apart from the node's code.
fn tally(spec: &Proposal, voters: &[String], votes: &[(&str, &str)]) -> Tally {
    if let Some(veto) = &spec.veto {
        if votes.iter().any(|(_, choice)| choice == veto) {
            return Tally::Rejected;
        }
    }
    let weighted = spec.rule == "WEIGHTED";
    let weight = |voter: &str| {
        if weighted {
            spec.weights.get(voter).copied().unwrap_or(1)
        } else {
            1
        }
    };
    let total: u64 = voters.iter().map(|voter| weight(voter)).sum();
    let cast: u64 = votes.iter().map(|(voter, _)| weight(voter)).sum();
    let remaining = total.saturating_sub(cast);
    let candidates: Vec<&String> = spec
        .options
        .iter()
        .filter(|option| Some(*option) != spec.veto.as_ref())
        .collect();
    let count = |option: &str| -> u64 {
        votes
            .iter()
            .filter(|(_, choice)| *choice == option)
            .map(|(voter, _)| weight(voter))
            .sum()
    };
    let wins = |option: &str| match spec.rule.as_str() {
        "MAJORITY" | "WEIGHTED" => 2 * count(option) > total,
        "AT_LEAST" => count(option) >= spec.k,
        "UNANIMOUS" => votes.len() == voters.len() && count(option) == total,
        _ => false,
    };
    let can_still_win = |option: &str| match spec.rule.as_str() {
        "MAJORITY" | "WEIGHTED" => 2 * (count(option) + remaining) > total,
        "AT_LEAST" => count(option) + remaining >= spec.k,
        "UNANIMOUS" => votes.iter().all(|(_, choice)| *choice == option),
        _ => true,
    };
    let winners: Vec<&&String> = candidates.iter().filter(|option| wins(option)).collect();
    if let Some(winner) = winners.first() {
        // With every earlier prefix open, only the last vote's option can have just won.
        let last = votes.last().map(|(_, choice)| *choice);
        let winner = winners
            .iter()
            .find(|option| Some(option.as_str()) == last)
            .unwrap_or(winner);
        return Tally::Decided((**winner).clone());
    }
    if candidates.iter().any(|option| can_still_win(option)) {
        Tally::Open
    } else {
        Tally::Rejected
    }
}

/// Checks the decisions events of `events` (see the module comment).
pub fn check(events: &[Event]) -> CheckResult {
    let operations = match pair(events, Some(NAME)) {
        Ok(operations) => operations,
        Err(error) => return CheckResult::unknown(NAME, format!("malformed history: {error:#}")),
    };
    let mut problems: Vec<String> = Vec::new();
    // Tag -> (proposal, outcome, acknowledged id).
    let mut proposals: BTreeMap<u64, (Proposal, OpKind, Option<u64>)> = BTreeMap::new();
    // (decision, voter, choice, outcome, error, index)
    let mut votes: Vec<(u64, String, String, OpKind, String, u64)> = Vec::new();
    // (where, index, state) of every observation besides the final reads.
    let mut observations: Vec<(String, u64, Json)> = Vec::new();
    // (decision, voter, index)
    let mut ballots: Vec<(u64, String, u64)> = Vec::new();
    // (node, consistency, index, read_unix_ms, decisions)
    let mut finals: Vec<FinalRead> = Vec::new();
    let mut watches = 0;
    for operation in &operations {
        let invoke = operation.invoke;
        let value = operation.value();
        match invoke.f.as_str() {
            "propose" => {
                let Some(proposal) = Proposal::from_json(&invoke.value) else {
                    problems.push(format!(
                        "event {}: a proposal it cannot parse",
                        invoke.index
                    ));
                    continue;
                };
                let id = operation.is_ok().then(|| value["id"].as_u64()).flatten();
                if operation.is_ok() {
                    observations.push((
                        format!("the response to proposal {}", proposal.tag),
                        invoke.index,
                        value["decision"].clone(),
                    ));
                }
                proposals.insert(proposal.tag, (proposal, operation.outcome(), id));
            }
            "vote" => {
                let (Some(id), Some(voter), Some(choice)) = (
                    invoke.value["id"].as_u64(),
                    invoke.value["voter"].as_str(),
                    invoke.value["choice"].as_str(),
                ) else {
                    problems.push(format!("event {}: a vote it cannot parse", invoke.index));
                    continue;
                };
                let error = operation
                    .complete
                    .and_then(|event| event.error.clone())
                    .unwrap_or_default();
                if operation.is_ok() {
                    observations.push((
                        format!("the response to {voter}'s vote {choice}"),
                        invoke.index,
                        value["decision"].clone(),
                    ));
                    // The state after an accepted vote holds that vote.
                    let holds = value["decision"]["votes"].as_array().is_some_and(|votes| {
                        votes
                            .iter()
                            .any(|vote| vote[0] == voter && vote[1] == choice)
                    });
                    if !holds {
                        problems.push(format!(
                            "{voter}'s vote {choice} in decision {id} was accepted (index {}), but \
                             the decision it answered does not hold it: {}",
                            invoke.index, value["decision"]
                        ));
                    }
                }
                votes.push((
                    id,
                    voter.to_string(),
                    choice.to_string(),
                    operation.outcome(),
                    error,
                    invoke.index,
                ));
            }
            "ballot" => {
                if let (Some(id), Some(voter)) = (value["id"].as_u64(), value["voter"].as_str()) {
                    ballots.push((id, voter.to_string(), invoke.index));
                }
            }
            "watch" if operation.is_ok() => {
                watches += 1;
                let states = value["states"].as_array().cloned().unwrap_or_default();
                let ended = value["error"].is_null();
                let mut previous = 0;
                for state in &states {
                    let length = state["votes"].as_array().map_or(0, Vec::len);
                    if length < previous {
                        problems.push(format!(
                            "the watch of decision {} (index {}) went back from {previous} votes to {length}",
                            invoke.value["id"], invoke.index
                        ));
                    }
                    previous = length;
                    observations.push((
                        format!("a watch of decision {}", invoke.value["id"]),
                        invoke.index,
                        state.clone(),
                    ));
                }
                if ended && states.last().is_some_and(|state| state["status"] == "OPEN") {
                    problems.push(format!(
                        "the watch of decision {} (index {}) ended while the decision was OPEN",
                        invoke.value["id"], invoke.index
                    ));
                }
            }
            FINAL_READ if operation.is_ok() => {
                let mut decisions = BTreeMap::new();
                for item in value["decisions"].as_array().into_iter().flatten() {
                    match Seen::parse(item) {
                        Some(seen) => {
                            decisions.insert(seen.id, seen);
                        }
                        None => problems.push(format!(
                            "final read at index {} lists a decision it cannot parse: {item}",
                            invoke.index
                        )),
                    }
                }
                finals.push((
                    invoke.node,
                    value["consistency"].as_str().unwrap_or("?").to_string(),
                    operation.complete_index().expect("ok completes"),
                    value["read_unix_ms"].as_u64().unwrap_or(0),
                    decisions,
                ));
            }
            _ => {}
        }
    }

    let count_votes = |kind: OpKind| votes.iter().filter(|vote| vote.3 == kind).count();
    let mut stats = json!({
        "proposals": proposals.len(),
        "proposals_ok": proposals.values().filter(|p| p.1 == OpKind::Ok).count(),
        "proposals_fail": proposals.values().filter(|p| p.1 == OpKind::Fail).count(),
        "proposals_info": proposals.values().filter(|p| p.1 == OpKind::Info).count(),
        "votes": votes.len(),
        "votes_ok": count_votes(OpKind::Ok),
        "votes_refused": count_votes(OpKind::Fail),
        "votes_info": count_votes(OpKind::Info),
        "ballots": ballots.len(),
        "watches": watches,
        "final_reads": finals.len(),
    });
    let Some(reference_position) = finals
        .iter()
        .position(|read| read.1 == "linearizable")
        .or(if finals.is_empty() { None } else { Some(0) })
    else {
        let mut result = CheckResult::unknown(NAME, "no final read succeeded".to_string());
        result.stats = stats;
        if !problems.is_empty() {
            result.verdict = Verdict::Invalid;
            result.problems.extend(problems);
        }
        return result;
    };
    let (reference_node, _, reference_index, read_unix_ms, reference) = &finals[reference_position];

    // Every node agrees.
    for (node, consistency, index, _, decisions) in &finals {
        let ids: BTreeSet<u64> = decisions.keys().chain(reference.keys()).copied().collect();
        let differences: Vec<String> = ids
            .into_iter()
            .filter(|id| decisions.get(id) != reference.get(id))
            .map(|id| {
                format!(
                    "decision {id}: {:?} vs {:?}",
                    reference.get(&id),
                    decisions.get(&id)
                )
            })
            .collect();
        if let Some(first) = differences.first() {
            problems.push(format!(
                "the final read on node {node:?} ({consistency}, index {index}) disagrees with the \
                 reference read on node {reference_node:?} (index {reference_index}) on {} \
                 decision(s), e.g. {first}",
                differences.len()
            ));
        }
    }

    // Proposals: nothing lost, nothing unexpected, nothing twice, specs kept.
    let mut by_tag: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (id, seen) in reference {
        by_tag.entry(seen.spec.tag).or_default().push(*id);
        match proposals.get(&seen.spec.tag) {
            None => problems.push(format!(
                "decision {id} (tag {}) is listed, but no such proposal was invoked",
                seen.spec.tag
            )),
            Some((_, OpKind::Fail, _)) => problems.push(format!(
                "decision {id} (tag {}) is listed, but its proposal failed, which promised it was \
                 not applied",
                seen.spec.tag
            )),
            Some((proposal, _, _)) if *proposal != seen.spec => problems.push(format!(
                "decision {id} is listed with spec {:?}, but was proposed as {proposal:?}",
                seen.spec
            )),
            Some(_) => {}
        }
        let mut electorate = seen.spec.electorate.clone();
        electorate.dedup();
        if seen.voters != electorate {
            problems.push(format!(
                "decision {id}: voters {:?}, but the named electorate is {electorate:?}",
                seen.voters
            ));
        }
    }
    for (tag, ids) in &by_tag {
        if ids.len() > 1 {
            problems.push(format!(
                "proposal {tag} is listed as {} decisions {ids:?}: applied more than once",
                ids.len()
            ));
        }
    }
    for (tag, (_, outcome, id)) in &proposals {
        if let (OpKind::Ok, Some(id)) = (outcome, id) {
            match reference.get(id) {
                Some(seen) if seen.spec.tag == *tag => {}
                Some(seen) => problems.push(format!(
                    "proposal {tag} was acknowledged as decision {id}, which is listed with tag {}",
                    seen.spec.tag
                )),
                None => problems.push(format!(
                    "decision {id} (proposal {tag}, acknowledged) is missing from the final read: lost"
                )),
            }
        }
    }

    // Each decision's votes and outcome under its rule.
    let mut statuses: BTreeMap<&str, u64> = BTreeMap::new();
    let mut votes_after_deadline = 0;
    for (id, seen) in reference {
        *statuses.entry(&seen.status).or_default() += 1;
        let mut voted = BTreeSet::new();
        for (voter, choice, cast) in &seen.votes {
            if !voted.insert(voter) {
                problems.push(format!(
                    "decision {id}: {voter} voted twice: {:?}",
                    seen.votes
                ));
            }
            if !seen.voters.contains(voter) {
                problems.push(format!(
                    "decision {id}: {voter} voted but is not in the electorate {:?}",
                    seen.voters
                ));
            }
            if !seen.spec.options.contains(choice) {
                problems.push(format!(
                    "decision {id}: {voter} voted {choice}, which is not an option"
                ));
            }
            if *cast > seen.spec.deadline {
                votes_after_deadline += 1;
            }
            if seen.status != "OPEN" && *cast > seen.closed {
                problems.push(format!(
                    "decision {id}: {voter}'s vote was cast at {cast}, after the decision closed at {}",
                    seen.closed
                ));
            }
        }
        let choices = seen.choices();
        if let Some(k) = (0..choices.len())
            .find(|&k| tally(&seen.spec, &seen.voters, &choices[..k]) != Tally::Open)
        {
            problems.push(format!(
                "decision {id}: the tally was {:?} after {k} vote(s), yet more votes were accepted: \
                 {:?} under {:?}",
                tally(&seen.spec, &seen.voters, &choices[..k]),
                seen.votes,
                seen.spec
            ));
        }
        let final_tally = tally(&seen.spec, &seen.voters, &choices);
        let closed_by_last_vote = seen
            .votes
            .last()
            .is_some_and(|(_, _, cast)| *cast == seen.closed);
        let valid = match (seen.status.as_str(), &final_tally) {
            ("DECIDED", Tally::Decided(winner)) => *winner == seen.outcome && closed_by_last_vote,
            ("REJECTED", Tally::Rejected) => seen.outcome.is_empty() && closed_by_last_vote,
            ("NO_QUORUM", Tally::Open) => {
                seen.outcome.is_empty() && seen.closed >= seen.spec.deadline
            }
            ("OPEN", Tally::Open) => {
                if *read_unix_ms > seen.spec.deadline + OPEN_PAST_DEADLINE_MS {
                    problems.push(format!(
                        "decision {id} is still OPEN {} ms after its deadline",
                        read_unix_ms - seen.spec.deadline
                    ));
                }
                true
            }
            _ => false,
        };
        if !valid {
            problems.push(format!(
                "decision {id} is {} {:?} (closed at {}, deadline {}), but its votes {:?} under \
                 {:?} give {final_tally:?}",
                seen.status, seen.outcome, seen.closed, seen.spec.deadline, seen.votes, seen.spec
            ));
        }
    }

    // Votes: acknowledged ones are listed, listed ones were cast, refusals agree.
    for (id, voter, choice, outcome, error, index) in &votes {
        let Some(seen) = reference.get(id) else {
            if *outcome == OpKind::Ok {
                problems.push(format!("{voter}'s vote in decision {id} was accepted (index {index}), but the decision is not listed"));
            }
            continue;
        };
        let listed = seen.votes.iter().find(|vote| &vote.0 == voter);
        match outcome {
            OpKind::Ok if listed.map(|vote| &vote.1) != Some(choice) => {
                problems.push(format!(
                    "{voter}'s vote {choice} in decision {id} was accepted (index {index}), but \
                     the final votes are {:?}: lost",
                    seen.votes
                ));
            }
            OpKind::Fail if error.contains("already voted") && listed.is_none() => {
                problems.push(format!(
                    "{voter}'s vote in decision {id} was refused as a second vote (index {index}), \
                     but {voter} has no vote in the final votes {:?}",
                    seen.votes
                ));
            }
            OpKind::Fail if error.contains("is closed") && seen.status == "OPEN" => {
                problems.push(format!(
                    "{voter}'s vote in decision {id} was refused as closed (index {index}), but the \
                     decision is OPEN"
                ));
            }
            OpKind::Fail
                if error.contains("not in the electorate") && seen.voters.contains(voter) =>
            {
                problems.push(format!(
                    "{voter}'s vote in decision {id} was refused as not a voter (index {index}), \
                     but {voter} is in the electorate {:?}",
                    seen.voters
                ));
            }
            _ => {}
        }
    }
    for (id, seen) in reference {
        for (voter, choice, _) in &seen.votes {
            let cast = votes
                .iter()
                .any(|(vote_id, vote_voter, vote_choice, outcome, _, _)| {
                    vote_id == id
                        && vote_voter == voter
                        && vote_choice == choice
                        && *outcome != OpKind::Fail
                });
            if !cast {
                problems.push(format!(
                    "decision {id} lists {voter}'s vote {choice}, but no such vote was invoked \
                     without being refused"
                ));
            }
        }
    }

    // Every other observation agrees with the final reads.
    for (source, index, state) in &observations {
        if state.is_null() {
            continue;
        }
        let Some(seen) = Seen::parse(state) else {
            problems.push(format!(
                "{source} (index {index}) holds a decision it cannot parse: {state}"
            ));
            continue;
        };
        let Some(reference) = reference.get(&seen.id) else {
            problems.push(format!(
                "{source} (index {index}) shows decision {}, which is not listed",
                seen.id
            ));
            continue;
        };
        let prefix = seen.votes.len() <= reference.votes.len()
            && reference.votes[..seen.votes.len()] == seen.votes[..];
        let agrees = prefix
            && seen.spec == reference.spec
            && seen.voters == reference.voters
            && match seen.status.as_str() {
                "OPEN" => {
                    seen.votes.len() < reference.votes.len()
                        || matches!(reference.status.as_str(), "OPEN" | "NO_QUORUM")
                }
                _ => seen == *reference,
            };
        if !agrees {
            problems.push(format!(
                "{source} (index {index}) shows decision {} as {} {:?} with votes {:?}, which \
                 contradicts the final {} {:?} with votes {:?}",
                seen.id,
                seen.status,
                seen.outcome,
                seen.votes,
                reference.status,
                reference.outcome,
                reference.votes
            ));
        }
    }

    for (id, voter, index) in &ballots {
        if let Some(seen) = reference.get(id) {
            if !seen.voters.contains(voter) {
                problems.push(format!(
                    "{voter} got a ballot for decision {id} (index {index}), but is not in its \
                     electorate {:?}",
                    seen.voters
                ));
            }
        }
    }

    stats["decisions"] = json!(reference.len());
    stats["proposals_info_present_at_end"] = json!(proposals
        .iter()
        .filter(|(tag, (_, outcome, _))| *outcome == OpKind::Info && by_tag.contains_key(tag))
        .count());
    stats["statuses"] = json!(statuses);
    stats["rules"] =
        json!(reference
            .values()
            .fold(BTreeMap::<&str, u64>::new(), |mut rules, seen| {
                *rules.entry(&seen.spec.rule).or_default() += 1;
                rules
            }));
    stats["votes_listed"] = json!(reference
        .values()
        .map(|seen| seen.votes.len())
        .sum::<usize>());
    // Accepted after the deadline but before the deadline timer fired: allowed (timers fire late
    // by up to a tick and the time without a leader; ARCHITECTURE.md), counted for the report.
    stats["votes_after_deadline"] = json!(votes_after_deadline);
    CheckResult::from_problems(NAME, problems, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jepsen::history::Script;

    fn proposal(tag: u64, rule: &str, k: u64, electorate: &[&str], veto: bool) -> Proposal {
        let mut options = vec!["yes".to_string(), "no".to_string()];
        if veto {
            options.push(VETO.to_string());
        }
        Proposal {
            tag,
            rule: rule.to_string(),
            k,
            options,
            veto: veto.then(|| VETO.to_string()),
            electorate: electorate.iter().map(|v| v.to_string()).collect(),
            weights: BTreeMap::new(),
            deadline: 10_000,
        }
    }

    fn state(
        id: u64,
        spec: &Proposal,
        status: &str,
        outcome: &str,
        votes: &[(&str, &str, u64)],
        closed: u64,
    ) -> Json {
        json!({
            "id": id,
            "spec": spec.to_json(),
            "voters": spec.electorate,
            "status": status,
            "outcome": outcome,
            "votes": votes.iter().map(|(v, c, t)| json!([v, c, t])).collect::<Vec<_>>(),
            "closed": closed,
        })
    }

    fn seen(spec: &Proposal) -> Vec<String> {
        spec.electorate.clone()
    }

    #[test]
    fn the_tally_follows_each_rule() {
        let abc = ["a", "b", "c"];
        let majority = proposal(1, "MAJORITY", 0, &abc, true);
        let voters = seen(&majority);
        assert_eq!(tally(&majority, &voters, &[("a", "yes")]), Tally::Open);
        assert_eq!(
            tally(&majority, &voters, &[("a", "yes"), ("b", "yes")]),
            Tally::Decided("yes".into())
        );
        assert_eq!(tally(&majority, &voters, &[("a", "veto")]), Tally::Rejected);
        let unanimous = proposal(2, "UNANIMOUS", 0, &abc, false);
        assert_eq!(
            tally(&unanimous, &voters, &[("a", "yes"), ("b", "yes")]),
            Tally::Open
        );
        assert_eq!(
            tally(&unanimous, &voters, &[("a", "yes"), ("b", "no")]),
            Tally::Rejected
        );
        assert_eq!(
            tally(
                &unanimous,
                &voters,
                &[("a", "no"), ("b", "no"), ("c", "no")]
            ),
            Tally::Decided("no".into())
        );
        let at_least = proposal(3, "AT_LEAST", 2, &abc, false);
        assert_eq!(
            tally(&at_least, &voters, &[("a", "yes"), ("b", "no")]),
            Tally::Open
        );
        assert_eq!(
            tally(
                &at_least,
                &voters,
                &[("a", "yes"), ("b", "no"), ("c", "no")]
            ),
            Tally::Decided("no".into())
        );
        let at_least_3 = proposal(4, "AT_LEAST", 3, &abc, false);
        assert_eq!(
            tally(&at_least_3, &voters, &[("a", "yes"), ("b", "no")]),
            Tally::Rejected
        );
        let mut weighted = proposal(5, "WEIGHTED", 0, &abc, false);
        weighted.weights.insert("a".into(), 3);
        // Total 5: a alone (3) is more than half.
        assert_eq!(
            tally(&weighted, &voters, &[("a", "no")]),
            Tally::Decided("no".into())
        );
        assert_eq!(tally(&weighted, &voters, &[("b", "no")]), Tally::Open);
        // Majority of four with a 2-2 split: nobody can reach 3.
        let four = proposal(6, "MAJORITY", 0, &["a", "b", "c", "d"], false);
        let voters = seen(&four);
        assert_eq!(
            tally(&four, &voters, &[("a", "yes"), ("b", "no")]),
            Tally::Open
        );
        assert_eq!(
            tally(
                &four,
                &voters,
                &[("a", "yes"), ("b", "no"), ("c", "yes"), ("d", "no")]
            ),
            Tally::Rejected
        );
    }

    /// Appends `script`'s events to `events`, renumbered, with `error` on its `fail` completions.
    fn append(events: &mut Vec<Event>, script: Script, error: Option<&str>) {
        let offset = events.len() as u64;
        for mut event in script.events() {
            event.index += offset;
            event.time_ns = event.index * 1_000;
            if event.kind == OpKind::Fail {
                event.error = error.map(str::to_string);
            }
            events.push(event);
        }
    }

    /// Decision 1 (majority of a, b, c; veto): a and b vote yes, decided; c's late vote is
    /// refused as closed, a's second vote as already voted; the outsider is refused. Decision 2
    /// (unanimous of a, b, ghost; proposal unknown): a votes, then the deadline passes.
    fn good() -> (Vec<Event>, Vec<Json>) {
        let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
        let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
        let one_open = state(1, &one, "OPEN", "", &[], 0);
        let one_decided = state(
            1,
            &one,
            "DECIDED",
            "yes",
            &[("a", "yes", 100), ("b", "yes", 200)],
            200,
        );
        let two_final = state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 10_500);
        let script = Script::new(NAME)
            .invoke(1, "propose", None, one.to_json())
            .ok(1, json!({"tag": 1, "id": 1, "decision": one_open}))
            .invoke(2, "propose", None, two.to_json())
            .info(2);
        let ballot = |script: Script, process: u64, voter: &str, id: u64| {
            let value = json!({"voter": voter, "id": id});
            script
                .invoke(process, "ballot", None, value.clone())
                .ok(process, value)
        };
        let script = ballot(script, 20, "a", 1);
        let script = ballot(script, 21, "b", 1);
        let script = vote(script, 3, 1, "a", "yes").ok(
            3,
            json!({"id": 1, "voter": "a", "choice": "yes", "decision": state(1, &one, "OPEN", "", &[("a", "yes", 100)], 0)}),
        );
        let script = vote(script, 4, 1, "b", "yes").ok(
            4,
            json!({"id": 1, "voter": "b", "choice": "yes", "decision": one_decided.clone()}),
        );
        let script = vote(script, 5, 2, "a", "no").info(5);
        let mut events = Vec::new();
        append(&mut events, script, None);
        let refusals = [
            (1, "c", "no", "FailedPrecondition: decision 1 is closed [rejected]"),
            (1, "a", "no", "FailedPrecondition: agent a already voted in decision 1 [rejected]"),
            (1, OUTSIDER, "yes", "FailedPrecondition: agent jepsen-outsider is not in the electorate of decision 1 [rejected]"),
        ];
        for (n, (id, voter, choice, error)) in refusals.into_iter().enumerate() {
            let process = 40 + n as u64;
            append(
                &mut events,
                vote(Script::new(NAME), process, id, voter, choice).fail(process),
                Some(error),
            );
        }
        (events, vec![one_decided, two_final])
    }

    fn vote(script: Script, process: u64, id: u64, voter: &str, choice: &str) -> Script {
        script.invoke(
            process,
            "vote",
            None,
            json!({"id": id, "voter": voter, "choice": choice}),
        )
    }

    fn final_read(
        events: &mut Vec<Event>,
        process: u64,
        consistency: &str,
        read_unix_ms: u64,
        decisions: &[Json],
    ) {
        let script = Script::new(NAME)
            .invoke(process, FINAL_READ, None, json!({"consistency": consistency}))
            .ok(
                process,
                json!({"consistency": consistency, "read_unix_ms": read_unix_ms, "decisions": decisions}),
            );
        append(events, script, None);
    }

    fn finals(mut events: Vec<Event>, decisions: &[Json]) -> Vec<Event> {
        for (process, consistency) in [
            (90, "serializable"),
            (91, "serializable"),
            (92, "linearizable"),
        ] {
            final_read(&mut events, process, consistency, 12_000, decisions);
        }
        events
    }

    fn problems_of(events: Vec<Event>) -> Vec<String> {
        let result = check(&events);
        assert_eq!(result.verdict, Verdict::Invalid, "expected a violation");
        result.problems
    }

    fn assert_found(problems: &[String], needle: &str) {
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "no problem mentions {needle:?}: {problems:#?}"
        );
    }

    #[test]
    fn a_good_history_is_valid() {
        let (events, decisions) = good();
        let result = check(&finals(events, &decisions));
        assert_eq!(result.verdict, Verdict::Valid, "{:?}", result.problems);
        assert_eq!(result.stats["votes_refused"], 3);
        assert_eq!(result.stats["statuses"]["NO_QUORUM"], 1);
    }

    #[test]
    fn an_outcome_that_contradicts_the_votes_is_invalid() {
        let (events, _) = good();
        let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
        let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
        // Two yes of three, yet "no" is said to have won.
        let decisions = vec![
            state(
                1,
                &one,
                "DECIDED",
                "no",
                &[("a", "yes", 100), ("b", "yes", 200)],
                200,
            ),
            // One vote of three under unanimity cannot be decided.
            state(2, &two, "DECIDED", "no", &[("a", "no", 300)], 300),
        ];
        let problems = problems_of(finals(events, &decisions));
        assert_found(&problems, "decision 1 is DECIDED \"no\"");
        assert_found(&problems, "decision 2 is DECIDED \"no\"");
        // The vote response said DECIDED yes: the observation contradicts the final state too.
        assert_found(&problems, "contradicts the final DECIDED \"no\"");
    }

    #[test]
    fn a_no_quorum_before_the_deadline_or_a_rejection_that_could_still_pass_is_invalid() {
        let (events, _) = good();
        let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
        let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
        let decisions = vec![
            state(
                1,
                &one,
                "REJECTED",
                "",
                &[("a", "yes", 100), ("b", "yes", 200)],
                200,
            ),
            state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 9_000),
        ];
        let problems = problems_of(finals(events, &decisions));
        assert_found(&problems, "decision 1 is REJECTED");
        assert_found(&problems, "decision 2 is NO_QUORUM");
    }

    #[test]
    fn votes_after_the_outcome_twice_or_from_outsiders_are_invalid() {
        let (events, _) = good();
        let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
        let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
        let decisions = vec![
            state(
                1,
                &one,
                "DECIDED",
                "yes",
                &[
                    ("a", "yes", 100),
                    ("b", "yes", 200),
                    ("c", "no", 250),
                    ("a", "no", 260),
                    (OUTSIDER, "yes", 270),
                ],
                // Closed by b's deciding vote: every later vote came after the close.
                200,
            ),
            state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 10_500),
        ];
        let problems = problems_of(finals(events, &decisions));
        assert_found(&problems, "yet more votes were accepted");
        assert_found(&problems, "a voted twice");
        assert_found(
            &problems,
            "jepsen-outsider voted but is not in the electorate",
        );
        assert_found(&problems, "no such vote was invoked without being refused");
        assert_found(&problems, "after the decision closed at 200");
    }

    #[test]
    fn a_lost_vote_or_decision_and_disagreeing_nodes_are_invalid() {
        let (events, _) = good();
        let one = proposal(1, "MAJORITY", 0, &["a", "b", "c"], true);
        // Decision 1 lost b's acknowledged vote and stays open; decision 2 is gone on one node.
        let open = state(1, &one, "OPEN", "", &[("a", "yes", 100)], 0);
        let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
        let two_final = state(2, &two, "NO_QUORUM", "", &[("a", "no", 300)], 10_500);
        let mut events = events;
        final_read(
            &mut events,
            90,
            "serializable",
            30_000,
            std::slice::from_ref(&open),
        );
        final_read(&mut events, 92, "linearizable", 30_000, &[open, two_final]);
        let problems = problems_of(events);
        assert_found(&problems, "b's vote yes in decision 1 was accepted");
        assert_found(&problems, "still OPEN");
        assert_found(&problems, "disagrees with the reference read");
        assert_found(&problems, "contradicts the final OPEN");
    }

    #[test]
    fn an_unexpected_or_duplicated_decision_is_invalid() {
        let (events, decisions) = good();
        let mut decisions = decisions;
        let other = proposal(9, "MAJORITY", 0, &["a", "b", "c"], false);
        decisions.push(state(3, &other, "OPEN", "", &[], 0));
        let two = proposal(2, "UNANIMOUS", 0, &["a", "b", GHOST], false);
        decisions.push(state(4, &two, "NO_QUORUM", "", &[], 10_400));
        let problems = problems_of(finals(events, &decisions));
        assert_found(&problems, "no such proposal was invoked");
        assert_found(&problems, "applied more than once");
    }

    #[test]
    fn without_a_final_read_the_check_is_unknown() {
        let (events, _) = good();
        assert_eq!(check(&events).verdict, Verdict::Unknown);
    }
}
