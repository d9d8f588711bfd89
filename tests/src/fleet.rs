//! Agents and tasks from the outside: a test agent speaking the raw Agents API (register, one
//! session stream, fenced verbs), and task calls retried with their request id until answered.
//!
//! Every write here is resent with the SAME request id to each node in turn after a transient
//! error, so a call that returns was applied exactly once, and a definite refusal (lease lost,
//! invalid argument, ...) is returned as the `Status` for the test to judge.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use conclave_proto::v1::agents_client::AgentsClient;
use conclave_proto::v1::decisions_client::DecisionsClient;
use conclave_proto::v1::session_event::Kind as EventKind;
use conclave_proto::v1::session_request::Kind as RequestKind;
use conclave_proto::v1::tasks_client::TasksClient;
use conclave_proto::v1::*;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::channel;
use crate::poll::{is_transient, POLL_INTERVAL};
use crate::writer::RequestIds;

/// Bound on one write, retries included: liveness across a leader change, not performance.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Clients for every node of a cluster, and a request-id source for writes.
#[derive(Clone, Debug)]
pub struct Fleet {
    nodes: Vec<(u64, SocketAddr)>,
    request_ids: RequestIds,
}

impl Fleet {
    pub fn new(api_addrs: BTreeMap<u64, SocketAddr>) -> Self {
        assert!(
            !api_addrs.is_empty(),
            "a fleet client needs at least one node"
        );
        Fleet {
            nodes: api_addrs.into_iter().collect(),
            request_ids: RequestIds::new(),
        }
    }

    pub fn next_request_id(&mut self) -> RequestId {
        self.request_ids.next_id()
    }

    pub fn tasks(&self, node: u64) -> TasksClient<Channel> {
        TasksClient::new(channel::channel(
            self.addr(node),
            Some(channel::REQUEST_TIMEOUT),
        ))
    }

    pub fn agents(&self, node: u64) -> AgentsClient<Channel> {
        AgentsClient::new(channel::channel(
            self.addr(node),
            Some(channel::REQUEST_TIMEOUT),
        ))
    }

    pub fn decisions(&self, node: u64) -> DecisionsClient<Channel> {
        DecisionsClient::new(channel::channel(
            self.addr(node),
            Some(channel::REQUEST_TIMEOUT),
        ))
    }

    pub fn addr(&self, node: u64) -> SocketAddr {
        self.nodes
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("node {node} is not part of this fleet"))
    }

    pub fn node_ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|(id, _)| *id).collect()
    }

    /// Sends `call` to each node in turn until one answers with something other than a
    /// transient error; the answer (success or a definite refusal) is returned.
    pub async fn retry<T, F, Fut>(
        &self,
        what: &str,
        mut call: F,
    ) -> anyhow::Result<Result<T, Status>>
    where
        F: FnMut(SocketAddr) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut recent = Vec::new();
        loop {
            for (id, addr) in &self.nodes {
                match call(*addr).await {
                    Ok(answer) => return Ok(Ok(answer)),
                    Err(status) if is_transient(&status) => {
                        recent.push(format!(
                            "node {id}: {:?} {}",
                            status.code(),
                            status.message()
                        ));
                    }
                    Err(status) => return Ok(Err(status)),
                }
            }
            if Instant::now() >= deadline {
                let recent = &recent[recent.len().saturating_sub(6)..];
                bail!("{what}: no definite answer within {CALL_TIMEOUT:?}; recent: {recent:#?}");
            }
            tokio::time::sleep(POLL_INTERVAL * 4).await;
        }
    }

    /// Submits one task; the returned id was created exactly once.
    pub async fn submit(&mut self, spec: TaskSpec) -> anyhow::Result<SubmitResponse> {
        let request = SubmitRequest {
            request_id: Some(self.next_request_id()),
            task: Some(spec),
        };
        self.retry("submit", |addr| {
            let request = request.clone();
            async move {
                tasks_client(addr)
                    .submit(request)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?
        .map_err(|status| anyhow!(status).context("submit refused"))
    }

    /// Reads a task linearizably, from any node that answers.
    pub async fn get_task(&self, task_id: u64) -> anyhow::Result<Task> {
        let answer = self
            .retry("get task", |addr| async move {
                tasks_client(addr)
                    .get_task(GetTaskRequest {
                        task_id,
                        consistency: ReadConsistency::Linearizable as i32,
                    })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?
            .map_err(|status| anyhow!(status).context(format!("get task {task_id}")))?;
        answer.task.context("GetTask answered without a task")
    }

    /// Every task of `queue` (all pages), read linearizably.
    pub async fn list_queue(&self, queue: &str) -> anyhow::Result<Vec<Task>> {
        let mut tasks = Vec::new();
        let mut after_id = 0;
        loop {
            let request = ListTasksRequest {
                queue: queue.to_string(),
                limit: 1000,
                after_id,
                ..ListTasksRequest::default()
            };
            let page = self
                .retry("list tasks", |addr| {
                    let request = request.clone();
                    async move {
                        tasks_client(addr)
                            .list_tasks(request)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?
                .map_err(|status| anyhow!(status).context("list tasks"))?;
            after_id = page.tasks.last().map_or(after_id, |task| task.id);
            tasks.extend(page.tasks);
            if !page.more {
                return Ok(tasks);
            }
        }
    }

    pub async fn get_decision(&self, decision_id: u64) -> anyhow::Result<Decision> {
        let answer = self
            .retry("get decision", |addr| async move {
                decisions_client(addr)
                    .get_decision(GetDecisionRequest {
                        decision_id,
                        consistency: ReadConsistency::Linearizable as i32,
                    })
                    .await
                    .map(|r| r.into_inner())
            })
            .await?
            .map_err(|status| anyhow!(status).context(format!("get decision {decision_id}")))?;
        answer
            .decision
            .context("GetDecision answered without a decision")
    }
}

pub fn tasks_client(addr: SocketAddr) -> TasksClient<Channel> {
    TasksClient::new(channel::channel(addr, Some(channel::REQUEST_TIMEOUT)))
}

pub fn agents_client(addr: SocketAddr) -> AgentsClient<Channel> {
    AgentsClient::new(channel::channel(addr, Some(channel::REQUEST_TIMEOUT)))
}

pub fn decisions_client(addr: SocketAddr) -> DecisionsClient<Channel> {
    DecisionsClient::new(channel::channel(addr, Some(channel::REQUEST_TIMEOUT)))
}

/// A minimal task of `queue` needing `capabilities`.
pub fn task_spec(queue: &str, payload: &[u8], capabilities: &[&str]) -> TaskSpec {
    TaskSpec {
        queue: queue.to_string(),
        payload: payload.to_vec(),
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
        ..TaskSpec::default()
    }
}

/// One agent driven by the test: a registered session and, while connected, one Session stream
/// whose events are collected in order and whose heartbeats go out every ttl/3.
pub struct TestAgent {
    pub name: String,
    pub session_id: u64,
    pub ttl_ms: u64,
    fleet: Fleet,
    events: Option<mpsc::UnboundedReceiver<SessionEvent>>,
    stream: Option<(JoinHandle<()>, JoinHandle<()>)>,
}

impl TestAgent {
    /// Registers `name` (replacing a live session of that name) with the given capabilities.
    pub async fn register(
        fleet: &Fleet,
        name: &str,
        capabilities: &[&str],
        max_concurrent: u32,
        ttl_ms: u64,
    ) -> anyhow::Result<TestAgent> {
        let mut fleet = fleet.clone();
        fleet.request_ids = RequestIds::new();
        let request = RegisterRequest {
            request_id: Some(fleet.next_request_id()),
            name: name.to_string(),
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            max_concurrent,
            ttl_ms,
            replace: true,
            ..RegisterRequest::default()
        };
        let registered = fleet
            .retry("register", |addr| {
                let request = request.clone();
                async move {
                    agents_client(addr)
                        .register(request)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await?
            .map_err(|status| anyhow!(status).context(format!("register {name}")))?;
        Ok(TestAgent {
            name: name.to_string(),
            session_id: registered.session_id,
            ttl_ms: registered.ttl_ms,
            fleet,
            events: None,
            stream: None,
        })
    }

    /// Opens the session stream on `node` and waits for `opened`.
    pub async fn connect(&mut self, node: u64) -> anyhow::Result<()> {
        self.disconnect();
        let addr = self.fleet.addr(node);
        let (requests, outgoing) = mpsc::channel::<SessionRequest>(16);
        requests
            .send(SessionRequest {
                kind: Some(RequestKind::Open(SessionOpen {
                    session_id: self.session_id,
                })),
            })
            .await
            .expect("the receiver is alive");
        let mut client = AgentsClient::new(channel::channel(addr, None));
        let mut incoming = client
            .session(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await
            .with_context(|| format!("open the session stream of {} on node {node}", self.name))?
            .into_inner();
        let interval = Duration::from_millis((self.ttl_ms / 3).max(100));
        let heartbeats = tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let beat = SessionRequest {
                    kind: Some(RequestKind::Heartbeat(Heartbeat { load: 0 })),
                };
                if requests.send(beat).await.is_err() {
                    return;
                }
            }
        });
        let (events_tx, events) = mpsc::unbounded_channel();
        let name = self.name.clone();
        let reader = tokio::spawn(async move {
            loop {
                match incoming.message().await {
                    Ok(Some(event)) => {
                        if events_tx.send(event).is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(status) => {
                        tracing::info!(agent = %name, %status, "session stream ended");
                        return;
                    }
                }
            }
        });
        self.events = Some(events);
        self.stream = Some((heartbeats, reader));
        match self.next_event(Duration::from_secs(10)).await? {
            SessionEvent {
                kind: Some(EventKind::Opened(opened)),
            } => {
                assert_eq!(opened.session_id, self.session_id, "opened another session");
                Ok(())
            }
            other => bail!("expected `opened` first on the session stream, got {other:?}"),
        }
    }

    /// Drops the stream and stops heartbeating: to the cluster, the agent went silent.
    pub fn disconnect(&mut self) {
        if let Some((heartbeats, reader)) = self.stream.take() {
            heartbeats.abort();
            reader.abort();
        }
        self.events = None;
    }

    /// The next event pushed on the stream.
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<SessionEvent> {
        let events = self.events.as_mut().context("the agent is not connected")?;
        match tokio::time::timeout(timeout, events.recv()).await {
            Ok(Some(event)) => Ok(event),
            Ok(None) => bail!("the session stream of {} ended", self.name),
            Err(_) => bail!("no session event for {} within {timeout:?}", self.name),
        }
    }

    /// The next assignment, skipping other events (ballots, notices).
    pub async fn next_assignment(&mut self, timeout: Duration) -> anyhow::Result<Assignment> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if let SessionEvent {
                kind: Some(EventKind::Assignment(assignment)),
            } = self.next_event(left).await?
            {
                return Ok(assignment);
            }
        }
    }

    /// The next event matching `pick`, skipping the others.
    pub async fn next_matching<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(&SessionEvent) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = self.next_event(left).await?;
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
    }

    pub async fn complete(
        &mut self,
        task_id: u64,
        fencing_token: u64,
        result: &[u8],
    ) -> anyhow::Result<Result<TaskVerbResponse, Status>> {
        let request = CompleteRequest {
            request_id: Some(self.fleet.next_request_id()),
            task_id,
            fencing_token,
            result: result.to_vec(),
            fence: None,
        };
        self.fleet
            .retry("complete", |addr| {
                let request = request.clone();
                async move {
                    agents_client(addr)
                        .complete(request)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
    }

    pub async fn fail(
        &mut self,
        task_id: u64,
        fencing_token: u64,
        error: &str,
        retryable: bool,
    ) -> anyhow::Result<Result<TaskVerbResponse, Status>> {
        let request = FailRequest {
            request_id: Some(self.fleet.next_request_id()),
            task_id,
            fencing_token,
            error: error.to_string(),
            retryable,
            retry_after_ms: 0,
        };
        self.fleet
            .retry("fail", |addr| {
                let request = request.clone();
                async move {
                    agents_client(addr)
                        .fail(request)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
    }

    pub async fn vote(
        &mut self,
        decision_id: u64,
        choice: &str,
    ) -> anyhow::Result<Result<VoteResponse, Status>> {
        let request = VoteRequest {
            request_id: Some(self.fleet.next_request_id()),
            session_id: self.session_id,
            decision_id,
            choice: choice.to_string(),
            rationale: format!("{} thinks {choice}", self.name),
        };
        self.fleet
            .retry("vote", |addr| {
                let request = request.clone();
                async move {
                    agents_client(addr)
                        .vote(request)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Whether `status` is the fencing refusal: FAILED_PRECONDITION whose message starts "lease lost".
pub fn is_lease_lost(status: &Status) -> bool {
    status.code() == Code::FailedPrecondition
        && status.message().starts_with("lease lost")
        && status
            .metadata()
            .get(conclave_proto::REASON_METADATA)
            .is_some_and(|v| v.as_bytes() == conclave_proto::REASON_LEASE_LOST.as_bytes())
}

/// The `conclave` CLI binary: `$CONCLAVE_CLI_BIN`, else the one beside the node binary.
pub fn cli_binary() -> anyhow::Result<std::path::PathBuf> {
    if let Some(path) = std::env::var_os("CONCLAVE_CLI_BIN") {
        return Ok(path.into());
    }
    let node = crate::node_process::node_binary()?;
    let path = node.with_file_name("conclave");
    if !path.is_file() {
        bail!(
            "the CLI binary {} does not exist: run `cargo build --workspace --bins` first",
            path.display()
        );
    }
    Ok(path)
}

/// One `conclave agent run` process, stopped by PID (SIGKILL) when dropped, also on panic.
pub struct ExecAgent {
    pub name: String,
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl ExecAgent {
    /// Starts `conclave agent run --name <name> --capability <capability> --concurrency <n>
    /// -- sh -c <script>` against every node of `fleet`, logging to `<dir>/agent-<name>.log`.
    pub fn start(
        fleet: &Fleet,
        dir: &std::path::Path,
        name: &str,
        capability: &str,
        concurrency: u32,
        extra_args: &[&str],
        script: &str,
    ) -> anyhow::Result<ExecAgent> {
        let endpoints: Vec<String> = fleet
            .nodes
            .iter()
            .map(|(_, addr)| addr.to_string())
            .collect();
        let log = dir.join(format!("agent-{name}.log"));
        let out = std::fs::File::create(&log).context("create the agent's log")?;
        let err = out.try_clone().context("clone the agent's log handle")?;
        let child = std::process::Command::new(cli_binary()?)
            .arg("agent")
            .arg("run")
            .arg("--endpoints")
            .arg(endpoints.join(","))
            .arg("--name")
            .arg(name)
            .arg("--capability")
            .arg(capability)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .args(extra_args)
            .arg("--")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .context("spawn `conclave agent run`")?;
        tracing::info!(agent = name, pid = child.id(), log = %log.display(), "exec agent started");
        Ok(ExecAgent {
            name: name.to_string(),
            child,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, by PID: the agent dies without a word to the cluster.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGINT, by PID, then waits up to `grace` for a clean exit; SIGKILL after that.
    pub fn interrupt(
        &mut self,
        grace: Duration,
    ) -> anyhow::Result<Option<std::process::ExitStatus>> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .context("send SIGINT")?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        self.kill();
        Ok(None)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for ExecAgent {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
