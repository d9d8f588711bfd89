//! A behaviour trace: seeded logs of every kind of command replayed through `StateMachine::apply`,
//! with what each entry answered and changed, compared line by line with
//! `testdata/trace.txt`.
//!
//! It guards refactors of the state machine (moving state between primitives, changing how
//! effects are routed): those must not change what apply does. So the text says only what a
//! client or a stream can see, projected field by field from the public read API: per entry the
//! response, the events it appended (sequence, time, content), the next due time and the state
//! digest; per log, at the end, every key, task, agent, decision, lock and barrier and the
//! answers of the queries (assignments, dead letters, listings, ballots, stats). No struct is
//! printed whole, so moving a field from one struct to another does not change a line; any
//! change of behaviour does.
//!
//! The log is generated from the seed and from what apply answered (ids, tokens, leases from the
//! events), never from private state, so a refactor that keeps the answers keeps the log too.
//!
//! A behaviour change made on purpose regenerates the file:
//! `CONCLAVE_UPDATE_TRACE=1 cargo test -p conclave-node --lib trace`, and the diff shows what
//! changed. A failure writes the new trace to the temporary directory (`conclave-trace.txt`) and
//! names the first line that differs.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::barriers::BarrierCommand;
use super::coordination::{
    AgentSpec, Backoff, Beat, CoordCommand, CoordEventKind, CoordResponse, DeadLetterSelector,
    DecisionGate, DecisionSpec, Electorate, FencingToken, Lease, Retention, Revoked, Rule,
    SessionId, TaskFilter, TaskId, TaskSpec, TaskState,
};
use super::locks::{Holder, LockCommand, LockKind};
use super::{Command, Request, RequestId, Response, Retention as StreamRetention, StateMachine};

const T0: u64 = 1_000_000;
const SEEDS: [u64; 4] = [1, 42, 0x5eed, 20_261_207];
const STEPS: usize = 700;
const TRACE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/src/state_machine/testdata/trace.txt"
);

#[test]
fn trace_of_seeded_logs_is_unchanged() {
    let mut trace = String::new();
    for seed in SEEDS {
        Tracer::new(seed).run(&mut trace);
    }
    if std::env::var_os("CONCLAVE_UPDATE_TRACE").is_some() {
        std::fs::write(TRACE, &trace).expect("write the trace");
        return;
    }
    let expected = std::fs::read_to_string(TRACE).expect("testdata/trace.txt");
    if trace == expected {
        return;
    }
    let new = std::env::temp_dir().join("conclave-trace.txt");
    std::fs::write(&new, &trace).expect("write the new trace");
    let (line, (old, now)) = expected
        .lines()
        .zip(trace.lines())
        .enumerate()
        .find(|(_, (old, now))| old != now)
        .unwrap_or((
            expected.lines().count().min(trace.lines().count()),
            ("<end>", "<end>"),
        ));
    panic!(
        "the trace changed at line {}: behaviour changed (the new trace is in {}).\n\
         was: {old}\n\
         now: {now}",
        line + 1,
        new.display()
    );
}

/// xorshift64: the trace's only randomness.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

/// What the log generator knows, learnt from answers and events only.
#[derive(Default)]
struct Known {
    last_task_id: TaskId,
    last_session_id: SessionId,
    last_token: FencingToken,
    last_decision_id: u64,
    /// Live sessions (from registrations and SessionClosed events).
    live: BTreeSet<SessionId>,
    /// Current leases: task -> token (from the task events).
    leases: BTreeMap<TaskId, FencingToken>,
    /// Lock tokens issued: (kind, name, token), for releases and keep-alives.
    lock_tokens: Vec<(LockKind, String, u64)>,
    /// Entries applied with a request id, for retries.
    requests: Vec<(RequestId, Command)>,
}

struct Tracer {
    seed: u64,
    rng: Rng,
    sm: StateMachine,
    index: u64,
    now_ms: u64,
    cursor: u64,
    known: Known,
}

impl Tracer {
    fn new(seed: u64) -> Self {
        let mut sm = StateMachine::new(1000);
        sm.set_retention(StreamRetention {
            history_revisions_max: 1000,
            coord_events_max: 1 << 24,
        });
        Tracer {
            seed,
            rng: Rng(seed),
            sm,
            index: 0,
            now_ms: T0,
            cursor: 0,
            known: Known::default(),
        }
    }

    fn run(mut self, out: &mut String) {
        writeln!(out, "== seed {} ({STEPS} steps)", self.seed).unwrap();
        for step in 0..STEPS {
            self.now_ms += self.rng.below(3_000);
            let command = self.command();
            self.apply(out, step, command);
            if self.rng.one_in(4) {
                let put = self.put();
                self.apply(out, step, put);
            }
            if self.rng.one_in(6) {
                let extra = self.extra();
                self.apply(out, step, extra);
            }
            if self.rng.one_in(25) {
                self.retry(out, step);
            }
            if self.rng.one_in(3) {
                let beats = self.beats();
                self.apply(out, step, beats);
            }
            // As the leader's ticker would, often: timers fire one by one, or many in one tick.
            let due = self.sm.next_due_ms().is_some_and(|due| due <= self.now_ms);
            if due && self.rng.one_in(3) {
                let tick = Command::Coordination(self.tick());
                self.apply(out, step, tick);
            }
            if step % 100 == 99 {
                writeln!(out, "-- after step {step}").unwrap();
                self.dump_agents(out);
                self.dump_queries(out);
            }
        }
        self.dump(out);
    }

    /// Applies one entry (every third with a request id) and writes what it did.
    fn apply(&mut self, out: &mut String, step: usize, command: Command) {
        let request_id = self.index.is_multiple_of(3).then_some(RequestId {
            client_id: 1 + self.index % 2,
            serial: self.index,
            min_pending_serial: self.index.saturating_sub(40),
        });
        if let Some(id) = request_id {
            self.known.requests.push((id, command.clone()));
        }
        self.apply_request(out, step, request_id, command);
    }

    /// Applies an earlier entry again under its request id: answered from the remembered result
    /// (or expired), never applied twice.
    fn retry(&mut self, out: &mut String, step: usize) {
        if self.known.requests.is_empty() {
            return;
        }
        let n = self.known.requests.len() as u64;
        let back = self.rng.below(n.min(30)) as usize;
        let (id, command) = self.known.requests[n as usize - 1 - back].clone();
        self.apply_request(out, step, Some(id), command);
    }

    fn apply_request(
        &mut self,
        out: &mut String,
        step: usize,
        request_id: Option<RequestId>,
        command: Command,
    ) {
        self.index += 1;
        let request = Request {
            now_ms: self.now_ms,
            request_id,
            fence: None,
            command,
        };
        let response = self.sm.apply(self.index, &request);
        self.learn(&request.command, &response);
        let retry = request_id.map_or(String::new(), |id| {
            format!(" id {}/{}", id.client_id, id.serial)
        });
        writeln!(
            out,
            "{step}.{} @{} {}{retry} -> {response:?} | due {:?} | #{:016x}",
            self.index,
            self.now_ms,
            command_name(&request.command),
            self.sm.next_due_ms(),
            self.sm.digest()
        )
        .unwrap();
        let events = self
            .sm
            .events_after(self.cursor)
            .expect("the ring keeps all");
        for event in events {
            writeln!(
                out,
                "  e{} @{} {}",
                event.seq,
                event.at_ms,
                event_text(&event.kind)
            )
            .unwrap();
            match &event.kind {
                CoordEventKind::Task { task_id, lease, .. } => {
                    match lease {
                        Some(lease) => self.known.leases.insert(*task_id, lease.token),
                        None => self.known.leases.remove(task_id),
                    };
                }
                CoordEventKind::SessionClosed { session_id, .. } => {
                    self.known.live.remove(session_id);
                }
                _ => {}
            }
            self.cursor = event.seq;
        }
    }

    /// Ids, sessions, tokens and grants from an answer.
    fn learn(&mut self, command: &Command, response: &Response) {
        let known = &mut self.known;
        match response {
            Response::Coordination { response, .. } => match response {
                CoordResponse::Registered { session_id, .. } => {
                    known.last_session_id = known.last_session_id.max(*session_id);
                    known.live.insert(*session_id);
                }
                CoordResponse::Submitted { results } => {
                    for (id, _) in results {
                        known.last_task_id = known.last_task_id.max(*id);
                    }
                }
                CoordResponse::Assigned { tokens } => {
                    for token in tokens.iter().flatten() {
                        known.last_token = known.last_token.max(*token);
                    }
                }
                CoordResponse::Proposed { decision_id } => {
                    known.last_decision_id = known.last_decision_id.max(*decision_id);
                }
                _ => {}
            },
            Response::Locks { response, .. } => {
                let token = match response {
                    super::LockResponse::Acquired { token, .. } => Some(*token),
                    _ => None,
                };
                if let (Some(token), Command::Locks(LockCommand::Acquire { kind, name, .. })) =
                    (token, command)
                {
                    known.lock_tokens.push((*kind, name.clone(), token));
                }
            }
            _ => {}
        }
    }

    /// A leased task and its token, or (one in five, or with none leased) any id and token.
    fn verb_target(&mut self) -> (TaskId, FencingToken) {
        let leases: Vec<(TaskId, FencingToken)> =
            self.known.leases.iter().map(|(t, l)| (*t, *l)).collect();
        if leases.is_empty() || self.rng.one_in(5) {
            (
                1 + self.rng.below(self.known.last_task_id + 1),
                1 + self.rng.below(self.known.last_token + 1),
            )
        } else {
            leases[self.rng.below(leases.len() as u64) as usize]
        }
    }

    /// Any session id (maybe gone, maybe never issued).
    fn session(&mut self) -> SessionId {
        1 + self.rng.below(self.known.last_session_id + 1)
    }

    /// Mostly a live session, sometimes any.
    fn live_session(&mut self) -> SessionId {
        let live: Vec<SessionId> = self.known.live.iter().copied().collect();
        if live.is_empty() || self.rng.one_in(4) {
            return self.session();
        }
        live[self.rng.below(live.len() as u64) as usize]
    }

    /// Mostly one of the last few decisions (likely open), sometimes any id.
    fn recent_decision(&mut self) -> u64 {
        let last = self.known.last_decision_id;
        if self.rng.one_in(4) {
            return 1 + self.rng.below(last + 1);
        }
        last.saturating_sub(self.rng.below(2)).max(1)
    }

    /// One coordination command, as `coordination::tests::drive` mixes them.
    fn command(&mut self) -> Command {
        let command = match self.rng.below(16) {
            0 | 1 => self.register(),
            2 | 3 => self.submit(),
            4..=6 => {
                let max = 1 + self.rng.below(4) as usize;
                CoordCommand::Assign {
                    assignments: self.sm.plan_assignments(self.now_ms, max),
                }
            }
            7..=9 => self.verb(),
            10 => CoordCommand::Heartbeats {
                beats: (1..=self.known.last_session_id)
                    .filter(|_| !self.rng.one_in(4))
                    .map(|session_id| Beat {
                        session_id,
                        load: 0,
                    })
                    .collect(),
            },
            11 => self.tick(),
            12 => self.propose(),
            13 => CoordCommand::Vote {
                session_id: self.live_session(),
                decision_id: self.recent_decision(),
                choice: self.rng.pick(&["yes", "yes", "no", "veto"]).into(),
                rationale: String::new(),
            },
            14 => self.manage(),
            _ => CoordCommand::SetDrained {
                name: format!("agent-{}", self.rng.below(5)),
                drained: self.rng.one_in(3),
            },
        };
        Command::Coordination(command)
    }

    /// The heartbeats of most live sessions, as a node batches them.
    fn beats(&mut self) -> Command {
        let live: Vec<SessionId> = self.known.live.iter().copied().collect();
        let mut beats = Vec::new();
        for session_id in live {
            if !self.rng.one_in(8) {
                let load = self.rng.below(3) as u32;
                beats.push(Beat { session_id, load });
            }
        }
        Command::Coordination(CoordCommand::Heartbeats { beats })
    }

    /// A tick, one in ten a new leader's (refresh).
    fn tick(&mut self) -> CoordCommand {
        CoordCommand::Tick {
            refresh: self.rng.one_in(10),
            retention: Retention {
                finished_max: 20,
                finished_age_ms: 30_000,
                idempotency_ms: 20_000,
                gone_agents_ms: 10_000,
            },
        }
    }

    fn register(&mut self) -> CoordCommand {
        let capabilities = if self.rng.one_in(2) {
            vec!["gpu".to_string()]
        } else {
            vec![]
        };
        CoordCommand::RegisterAgent(AgentSpec {
            name: format!("agent-{}", self.rng.below(5)),
            capabilities: capabilities.into_iter().collect(),
            labels: BTreeMap::new(),
            max_concurrent: 1 + self.rng.below(3) as u32,
            version: "1".into(),
            metadata: BTreeMap::new(),
            ttl_ms: 5_000 + self.rng.below(20_000),
            replace: self.rng.one_in(2),
            breaker_failures: 2,
            breaker_cooldown_ms: 5_000,
        })
    }

    fn submit(&mut self) -> CoordCommand {
        let count = 1 + self.rng.below(4);
        let tasks = (0..count).map(|_| self.task_spec()).collect();
        CoordCommand::Submit { tasks }
    }

    fn task_spec(&mut self) -> TaskSpec {
        let now_ms = self.now_ms;
        let capabilities = if self.rng.one_in(4) {
            vec!["gpu".to_string()]
        } else {
            vec![]
        };
        let requires =
            (self.rng.one_in(5) && self.known.last_decision_id > 0).then(|| DecisionGate {
                decision_id: self.recent_decision(),
                option: self.rng.pick(&["yes", "yes", "no"]).into(),
            });
        TaskSpec {
            queue: format!("q{}", self.rng.below(3)),
            payload: b"payload".to_vec(),
            content_type: String::new(),
            capabilities: capabilities.into_iter().collect(),
            priority: self.rng.below(3) as i32,
            max_attempts: 1 + self.rng.below(3) as u32,
            backoff: Backoff {
                initial_ms: 1_000,
                maximum_ms: 60_000,
                multiplier_permille: 1_500 + self.rng.below(1_000) as u32,
                jitter_permille: self.rng.below(500) as u32,
            },
            lease_ms: 1_000 + self.rng.below(20_000),
            deadline_ms: if self.rng.one_in(4) {
                now_ms + self.rng.below(60_000)
            } else {
                0
            },
            not_before_ms: if self.rng.one_in(5) {
                now_ms + self.rng.below(5_000)
            } else {
                0
            },
            idempotency_key: if self.rng.one_in(3) {
                format!("k{}", self.rng.below(10))
            } else {
                String::new()
            },
            correlation_id: String::new(),
            parent_id: 0,
            labels: BTreeMap::from([("n".to_string(), self.rng.below(2).to_string())]),
            requires,
        }
    }

    /// A task verb on a current lease or a stale one.
    fn verb(&mut self) -> CoordCommand {
        let (task_id, token) = self.verb_target();
        match self.rng.below(6) {
            0 => CoordCommand::Complete {
                task_id,
                token,
                result: vec![1, 2, 3],
            },
            1 => CoordCommand::Fail {
                task_id,
                token,
                error: "e".into(),
                retryable: !self.rng.one_in(3),
                retry_after_ms: self.rng.below(2_000),
            },
            2 => CoordCommand::Release { task_id, token },
            3 => CoordCommand::ExtendLease {
                task_id,
                token,
                lease_ms: 1_000 + self.rng.below(10_000),
            },
            4 => CoordCommand::Progress {
                task_id,
                token,
                percent: self.rng.below(101) as u32,
                message: "m".into(),
                checkpoint: "c".into(),
                extend_lease: self.rng.one_in(2),
            },
            _ => CoordCommand::Complete {
                task_id,
                token,
                result: Vec::new(),
            },
        }
    }

    fn propose(&mut self) -> CoordCommand {
        let rule = [
            Rule::Majority,
            Rule::Unanimous,
            Rule::AtLeast(2),
            Rule::Weighted,
        ][self.rng.below(4) as usize]
            .clone();
        let electorate = if self.rng.one_in(4) {
            Electorate {
                agents: Vec::new(),
                capability: "gpu".into(),
            }
        } else {
            Electorate {
                agents: vec!["agent-0".into(), "agent-1".into(), "agent-2".into()],
                capability: String::new(),
            }
        };
        CoordCommand::Propose(DecisionSpec {
            question: "ship it?".into(),
            options: vec!["yes".into(), "no".into(), "veto".into()],
            electorate,
            rule,
            weights: BTreeMap::from([("agent-1".to_string(), 2)]),
            veto_option: self.rng.one_in(3).then(|| "veto".to_string()),
            deadline_ms: self.now_ms + 5_000 + self.rng.below(40_000),
            labels: BTreeMap::new(),
        })
    }

    /// Cancel, redrive, purge or close a session.
    fn manage(&mut self) -> CoordCommand {
        match self.rng.below(5) {
            0 | 1 => CoordCommand::Cancel {
                task_id: 1 + self.rng.below(self.known.last_task_id + 1),
                reason: "r".into(),
            },
            2 => CoordCommand::Redrive {
                selector: if self.rng.one_in(2) {
                    DeadLetterSelector::Queue(String::new())
                } else {
                    DeadLetterSelector::Queue(format!("q{}", self.rng.below(3)))
                },
            },
            3 => CoordCommand::Purge {
                selector: DeadLetterSelector::Ids(vec![
                    1 + self.rng.below(self.known.last_task_id + 1),
                ]),
            },
            _ => CoordCommand::CloseSession {
                session_id: self.live_session(),
            },
        }
    }

    /// A key put, attached to a session (maybe gone, maybe never live) or not.
    fn put(&mut self) -> Command {
        Command::Put {
            key: format!("key/{}", self.rng.below(20)).into_bytes(),
            value: b"v".to_vec(),
            session_id: self.rng.below(self.known.last_session_id + 2),
        }
    }

    /// Votes, gated tasks, locks held by sessions or by leases, their releases and keep-alives, and barriers.
    fn extra(&mut self) -> Command {
        let name = format!("l{}", self.rng.below(3));
        match self.rng.below(9) {
            8 if self.known.last_decision_id > 0 => {
                let requires = Some(DecisionGate {
                    decision_id: self.recent_decision(),
                    option: self.rng.pick(&["yes", "no"]).into(),
                });
                let tasks = vec![TaskSpec {
                    requires,
                    ..self.task_spec()
                }];
                Command::Coordination(CoordCommand::Submit { tasks })
            }
            6 | 7 => Command::Coordination(CoordCommand::Vote {
                session_id: self.live_session(),
                decision_id: self.recent_decision(),
                choice: self.rng.pick(&["yes", "yes", "yes", "no"]).into(),
                rationale: String::new(),
            }),
            0..=2 => {
                let session_id = if self.rng.one_in(3) {
                    0
                } else {
                    self.live_session()
                };
                let kind = if self.rng.one_in(3) {
                    LockKind::Semaphore
                } else {
                    LockKind::Lock
                };
                let limit = if kind == LockKind::Lock { 1 } else { 2 };
                Command::Locks(LockCommand::Acquire {
                    kind,
                    name,
                    holder: Holder {
                        session_id,
                        ttl_ms: if session_id == 0 { 5_000 } else { 0 },
                        owner: "o".into(),
                    },
                    permits: 1,
                    limit,
                    wait_ms: if self.rng.one_in(2) { 0 } else { 20_000 },
                    lock_delay_ms: 1_000,
                    value: Vec::new(),
                })
            }
            3 | 4 if !self.known.lock_tokens.is_empty() => {
                let n = self.known.lock_tokens.len() as u64;
                let (kind, name, token) =
                    self.known.lock_tokens[self.rng.below(n) as usize].clone();
                if self.rng.one_in(2) {
                    Command::Locks(LockCommand::Release { kind, name, token })
                } else {
                    Command::Locks(LockCommand::KeepAlive { kind, name, token })
                }
            }
            _ => Command::Barriers(BarrierCommand::Enter {
                name: format!("b{}", self.rng.below(2)),
                participant: format!("p{}", self.rng.below(4)),
                parties: 3,
                quorum: 2,
                timeout_ms: 10_000,
            }),
        }
    }

    /// The final state, through the read API.
    fn dump(&self, out: &mut String) {
        let sm = &self.sm;
        writeln!(
            out,
            "-- state: index {:?} revision {} now {} events {} due {:?} #{:016x}",
            sm.last_index(),
            sm.revision(),
            sm.now_ms(),
            sm.last_event_seq(),
            sm.next_due_ms(),
            sm.digest()
        )
        .unwrap();
        self.dump_keys(out);
        self.dump_tasks(out);
        self.dump_agents(out);
        self.dump_decisions(out);
        self.dump_locks(out);
        self.dump_queries(out);
    }

    fn dump_keys(&self, out: &mut String) {
        let (keys, _) = self.sm.list(b"", b"", usize::MAX);
        for kv in keys {
            writeln!(
                out,
                "key {} = {} create {} mod {} version {} session {}",
                String::from_utf8_lossy(&kv.key),
                String::from_utf8_lossy(&kv.value),
                kv.create_revision,
                kv.mod_revision,
                kv.version,
                kv.session_id
            )
            .unwrap();
        }
    }

    fn dump_tasks(&self, out: &mut String) {
        for id in 1..=self.known.last_task_id + 1 {
            let Some(task) = self.sm.tasks().task(id) else {
                writeln!(out, "task {id} none").unwrap();
                continue;
            };
            let spec = &task.spec;
            writeln!(
                out,
                "task {id} {} {:?} attempts {} submitted {} updated {} ready {} lease {} \
                 last_token {} error {:?} dead {:?} cancel {:?} result {:?} progress {:?}",
                spec.queue,
                task.state,
                task.attempts,
                task.submitted_ms,
                task.updated_ms,
                task.ready_at_ms,
                lease_text(task.lease.as_ref()),
                task.last_token,
                task.last_error,
                task.dead_letter_reason,
                task.cancel_reason,
                task.result,
                task.progress.as_ref().map(|p| (
                    p.percent,
                    &p.message,
                    &p.checkpoint,
                    p.updated_ms
                )),
            )
            .unwrap();
            writeln!(
                out,
                "  spec priority {} attempts {} lease {} deadline {} not_before {} key {:?} \
                 capabilities {:?} requires {:?} backoff {:?}",
                spec.priority,
                spec.max_attempts,
                spec.lease_ms,
                spec.deadline_ms,
                spec.not_before_ms,
                spec.idempotency_key,
                spec.capabilities,
                spec.requires.as_ref().map(|g| (g.decision_id, &g.option)),
                (
                    spec.backoff.initial_ms,
                    spec.backoff.maximum_ms,
                    spec.backoff.multiplier_permille,
                    spec.backoff.jitter_permille
                ),
            )
            .unwrap();
            for a in &task.history {
                writeln!(
                    out,
                    "  attempt {} {} token {} {}..{} {:?} {:?}",
                    a.attempt, a.agent, a.token, a.assigned_ms, a.ended_ms, a.outcome, a.error
                )
                .unwrap();
            }
        }
    }

    fn dump_agents(&self, out: &mut String) {
        for agent in self.sm.agents().iter() {
            writeln!(
                out,
                "agent {} session {} live {} expires {} registered {} heartbeat {} load {} \
                 running {:?} drained {} breaker {:?} failures {} until {} completed {} \
                 failed {} gone {}",
                agent.name,
                agent.session_id,
                agent.live,
                agent.expires_at_ms,
                agent.registered_ms,
                agent.last_heartbeat_ms,
                agent.reported_load,
                agent.running,
                agent.drained,
                agent.breaker,
                agent.consecutive_failures,
                agent.breaker_until_ms,
                agent.completed,
                agent.failed,
                agent.gone_ms
            )
            .unwrap();
            let spec = &agent.spec;
            writeln!(
                out,
                "  spec capabilities {:?} max {} ttl {} breaker {}/{} replace {}",
                spec.capabilities,
                spec.max_concurrent,
                spec.ttl_ms,
                spec.breaker_failures,
                spec.breaker_cooldown_ms,
                spec.replace
            )
            .unwrap();
        }
    }

    fn dump_decisions(&self, out: &mut String) {
        let (decisions, _) = self.sm.decisions().list_decisions(&[], 0, usize::MAX);
        for d in decisions {
            let votes: Vec<String> = d
                .votes
                .iter()
                .map(|v| format!("{}={}@{}", v.voter, v.choice, v.cast_ms))
                .collect();
            writeln!(
                out,
                "decision {} {:?} outcome {:?} voters {:?} votes {votes:?} proposed {} closed {} \
                 reason {:?} rule {:?} deadline {}",
                d.id,
                d.status,
                d.outcome,
                d.voters,
                d.proposed_ms,
                d.closed_ms,
                d.reason,
                d.spec.rule,
                d.spec.deadline_ms
            )
            .unwrap();
        }
    }

    fn dump_locks(&self, out: &mut String) {
        for kind in [LockKind::Lock, LockKind::Semaphore, LockKind::Election] {
            let (locks, _) = self.sm.locks().list(kind, "", usize::MAX);
            for lock in locks {
                let grants = |grants: &BTreeMap<u64, super::locks::Grant>| -> Vec<String> {
                    grants
                        .values()
                        .map(|g| {
                            format!(
                                "t{} s{} ttl {} {} x{} expires {} since {}",
                                g.token,
                                g.holder.session_id,
                                g.holder.ttl_ms,
                                g.holder.owner,
                                g.permits,
                                g.expires_at_ms,
                                g.since_ms
                            )
                        })
                        .collect()
                };
                writeln!(
                    out,
                    "{} {} limit {} delay {} until {} last_token {} holders {:?} waiters {:?}",
                    kind.noun(),
                    lock.name,
                    lock.limit,
                    lock.lock_delay_ms,
                    lock.unavailable_until_ms,
                    lock.last_token,
                    grants(&lock.holders),
                    grants(&lock.waiters)
                )
                .unwrap();
            }
        }
        let (barriers, _) = self.sm.barriers().list("", usize::MAX);
        for b in barriers {
            writeln!(
                out,
                "barrier {} {:?} {}/{} arrived {:?} created {} deadline {} closed {}",
                b.name,
                b.status,
                b.quorum,
                b.parties,
                b.arrived,
                b.created_ms,
                b.deadline_ms,
                b.closed_ms
            )
            .unwrap();
        }
    }

    /// The answers of the read queries streams and handlers use.
    fn dump_queries(&self, out: &mut String) {
        let (agents, tasks) = (self.sm.agents(), self.sm.tasks());
        for session_id in 1..=self.known.last_session_id + 1 {
            let assigned: Vec<TaskId> =
                tasks.assignments(session_id).iter().map(|t| t.id).collect();
            let Some(agent) = agents.agent_by_session(session_id) else {
                assert!(assigned.is_empty() && !agents.session_live(session_id));
                continue;
            };
            let agent = (&agent.name, agent.live);
            writeln!(
                out,
                "session {session_id} agent {agent:?} live {} assignments {assigned:?}",
                agents.session_live(session_id)
            )
            .unwrap();
        }
        for agent in agents.iter() {
            let ballots: Vec<u64> = self
                .sm
                .decisions()
                .open_ballots(&agent.name)
                .iter()
                .map(|d| d.id)
                .collect();
            writeln!(out, "ballots {} {ballots:?}", agent.name).unwrap();
        }
        let (dead, more) = tasks.dead_letters("", 0, usize::MAX);
        let dead: Vec<TaskId> = dead.iter().map(|t| t.id).collect();
        writeln!(out, "dead letters {dead:?} {more}").unwrap();
        let filters = [
            TaskFilter::default(),
            TaskFilter {
                queue: "q1".into(),
                ..TaskFilter::default()
            },
            TaskFilter {
                states: vec![TaskState::Pending, TaskState::Assigned],
                ..TaskFilter::default()
            },
            TaskFilter {
                queue: "q0".into(),
                states: vec![TaskState::Succeeded, TaskState::RetryWait],
                labels: BTreeMap::from([("n".to_string(), "1".to_string())]),
                parent_id: 0,
            },
        ];
        for filter in &filters {
            let listing = tasks.list_tasks(filter, 3, 25);
            let ids: Vec<TaskId> = listing.tasks.iter().map(|t| t.id).collect();
            writeln!(
                out,
                "list {:?} {:?} -> {ids:?} more {} next {}",
                filter.queue, filter.states, listing.more, listing.next_after_id
            )
            .unwrap();
        }
        writeln!(out, "stats {:?}", self.sm.coord_stats()).unwrap();
        writeln!(
            out,
            "plan {:?}",
            self.sm.plan_assignments(self.sm.now_ms(), 64)
        )
        .unwrap();
    }
}

fn command_name(command: &Command) -> String {
    match command {
        Command::Coordination(c) => c.name().to_string(),
        Command::Locks(c) => format!("lock {}", c.name()),
        Command::Barriers(_) => "barrier enter".to_string(),
        Command::Put {
            key, session_id, ..
        } => {
            format!("put {} session {session_id}", String::from_utf8_lossy(key))
        }
        other => format!("{other:?}"),
    }
}

fn lease_text(lease: Option<&Lease>) -> String {
    lease.map_or("-".to_string(), |l| {
        format!(
            "s{}/{}/#{}/t{}/{}..{}",
            l.session_id, l.agent, l.attempt, l.token, l.assigned_ms, l.deadline_ms
        )
    })
}

fn revoked_text(revoked: Option<&Revoked>) -> String {
    revoked.map_or("-".to_string(), |r| {
        format!(
            "s{}/t{}/canceled {}/{:?}",
            r.session_id, r.token, r.canceled, r.reason
        )
    })
}

fn event_text(kind: &CoordEventKind) -> String {
    match kind {
        CoordEventKind::Task {
            task_id,
            queue,
            kind,
            state,
            attempts,
            lease,
            revoked,
        } => format!(
            "task {task_id} {queue} {kind:?} -> {state:?} attempts {attempts} lease {} revoked {}",
            lease_text(lease.as_ref()),
            revoked_text(revoked.as_ref())
        ),
        CoordEventKind::Decision { decision_id, kind } => {
            format!("decision {decision_id} {kind:?}")
        }
        CoordEventKind::SessionClosed {
            session_id,
            agent,
            reason,
        } => format!("session {session_id} closed {agent} {reason:?}"),
        CoordEventKind::Lock(event) => format!(
            "{} {} {:?} token {} session {} {:?}",
            event.lock.noun(),
            event.name,
            event.kind,
            event.token,
            event.session_id,
            event.reason
        ),
        CoordEventKind::Barrier(event) => format!("barrier {} {:?}", event.name, event.kind),
        CoordEventKind::Workflow(event) => format!("workflow {event:?}"),
        CoordEventKind::Topic(event) => format!("topic {event:?}"),
    }
}
