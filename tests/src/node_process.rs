//! One `conclave-node` process: spawn, wait until it serves, stop (SIGTERM), kill (SIGKILL),
//! pause (SIGSTOP) and resume (SIGCONT).
//!
//! The process is always addressed by its PID through the `Child` that spawned it, never by name,
//! and it is killed and reaped when the [`NodeProcess`] is dropped, also when a test panics (a
//! paused process is resumed first, so nothing is left stopped).

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use conclave_proto::v1::{StatusRequest, StatusResponse};
use tokio::time::Instant;

use crate::channel;
use crate::poll::POLL_INTERVAL;

/// Environment variable naming the node binary to run.
pub const NODE_BIN_ENV: &str = "CONCLAVE_NODE_BIN";
/// Environment variable with the node's `--log` filter in tests (default `info`).
pub const NODE_LOG_ENV: &str = "CONCLAVE_TEST_NODE_LOG";

/// Everything needed to start one node, the same on every restart.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    pub id: u64,
    pub api_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    /// `--metrics-addr` (Prometheus metrics over HTTP), when the test wants it.
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// The node's stdout and stderr, appended to across restarts.
    pub log_path: PathBuf,
    /// Flags after the identity and address flags (timings, snapshot and watch settings).
    pub args: Vec<String>,
    /// A command the node binary is run under, e.g. `ip netns exec <namespace>`; it must exec the
    /// binary in place, so that the PID spawned is the node's. Empty: run the binary directly.
    pub launcher: Vec<String>,
    /// Environment variables added to the harness's own (e.g. libfaketime's: [`crate::clock`]).
    pub env: Vec<(String, String)>,
}

/// Why a start failed; the harness retries a first start on new ports after [`Self::AddrInUse`].
#[derive(Debug)]
pub enum StartError {
    /// The node exited because one of its ports was taken by another process.
    AddrInUse(String),
    Other(anyhow::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AddrInUse(log) => write!(formatter, "a port was in use:\n{log}"),
            Self::Other(error) => write!(formatter, "{error:#}"),
        }
    }
}

impl std::error::Error for StartError {}

/// A node process, running or not.
#[derive(Debug)]
pub struct NodeProcess {
    spec: NodeSpec,
    child: Option<Child>,
    starts: u32,
    /// Where this start's output begins in the log file.
    log_offset: u64,
    /// True between [`NodeProcess::pause`] and [`NodeProcess::resume`] (or the process's end).
    paused: bool,
}

impl NodeProcess {
    /// A node that has not been started yet.
    pub fn new(spec: NodeSpec) -> Self {
        Self {
            spec,
            child: None,
            starts: 0,
            log_offset: 0,
            paused: false,
        }
    }

    pub fn spec(&self) -> &NodeSpec {
        &self.spec
    }

    /// Changes the addresses of a node that never started successfully (its ports were taken).
    pub fn set_addrs(&mut self, api_addr: SocketAddr, peer_addr: SocketAddr) {
        assert!(
            self.child.is_none(),
            "addresses change only while the node is down"
        );
        self.spec.api_addr = api_addr;
        self.spec.peer_addr = peer_addr;
    }

    /// Changes the metrics address of a node that never started successfully.
    pub fn set_metrics_addr(&mut self, metrics_addr: Option<SocketAddr>) {
        assert!(
            self.child.is_none(),
            "addresses change only while the node is down"
        );
        self.spec.metrics_addr = metrics_addr;
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs the node under `launcher` (see [`NodeSpec::launcher`]), from its next start on.
    pub fn set_launcher(&mut self, launcher: Vec<String>) {
        assert!(
            self.child.is_none(),
            "the launcher changes only while the node is down"
        );
        self.spec.launcher = launcher;
    }

    /// Appends flags to those the node starts with, from its next start on.
    pub fn add_args(&mut self, args: impl IntoIterator<Item = String>) {
        self.spec.args.extend(args);
    }

    /// Adds environment variables the node starts with, from its next start on.
    pub fn add_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        self.spec.env.extend(env);
    }

    /// True while the process is stopped by [`NodeProcess::pause`].
    pub fn is_paused(&self) -> bool {
        self.paused && self.child.is_some()
    }

    /// Stops the process with SIGSTOP: it keeps its sockets and state but runs no code, as a node
    /// in a long GC pause or a VM migration would. Fails if the node is not running.
    pub fn pause(&mut self) -> anyhow::Result<()> {
        let pid = self.running_pid()?;
        signal(pid, "STOP")?;
        self.paused = true;
        tracing::info!(node = self.spec.id, pid, "node paused (SIGSTOP)");
        Ok(())
    }

    /// Continues a paused process with SIGCONT. A node that is not paused is left alone.
    pub fn resume(&mut self) -> anyhow::Result<()> {
        if !self.paused {
            return Ok(());
        }
        self.paused = false;
        if let Some(pid) = self.pid() {
            signal(pid, "CONT")?;
            tracing::info!(node = self.spec.id, pid, "node resumed (SIGCONT)");
        }
        Ok(())
    }

    /// The kernel's scheduling state of the process (`/proc/<pid>/stat`): `'T'` when stopped by a
    /// signal, `'S'` or `'R'` when running; `None` when there is no process.
    pub fn scheduler_state(&self) -> Option<char> {
        let pid = self.pid()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may contain spaces; the state follows it.
        let after_name = &stat[stat.rfind(')')? + 1..];
        after_name.trim_start().chars().next()
    }

    fn running_pid(&mut self) -> anyhow::Result<u32> {
        if !self.is_running() {
            bail!("node {} is not running", self.spec.id);
        }
        Ok(self.pid().expect("a running node has a pid"))
    }

    /// True while the process has not exited. Reaps it if it has.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(status))) => {
                tracing::warn!(node = self.spec.id, %status, "node exited on its own");
                if let Some(child) = self.child.take() {
                    self.reaped(child.id());
                }
                self.paused = false;
                false
            }
            Some(Err(error)) => panic!("try_wait on node {} failed: {error}", self.spec.id),
            None => false,
        }
    }

    /// Starts the process and waits until it answers Status on its API address.
    pub async fn start(&mut self, timeout: Duration) -> Result<(), StartError> {
        self.spawn().map_err(StartError::Other)?;
        self.wait_serving(timeout).await
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        assert!(
            self.child.is_none(),
            "node {} is already running",
            self.spec.id
        );
        fs::create_dir_all(&self.spec.data_dir)
            .with_context(|| format!("create {}", self.spec.data_dir.display()))?;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spec.log_path)
            .with_context(|| format!("open {}", self.spec.log_path.display()))?;
        self.starts += 1;
        writeln!(
            log,
            "===== conclave-tests: start #{} of node {} at {:?} =====",
            self.starts,
            self.spec.id,
            SystemTime::now()
        )?;
        self.log_offset = log.metadata()?.len();
        let binary = node_binary()?;
        let log_level = std::env::var(NODE_LOG_ENV).unwrap_or_else(|_| "info".to_owned());
        let mut command = match self.spec.launcher.split_first() {
            Some((program, launcher_args)) => {
                let mut command = Command::new(program);
                command.args(launcher_args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .arg("--id")
            .arg(self.spec.id.to_string())
            .arg("--api-addr")
            .arg(self.spec.api_addr.to_string())
            .arg("--peer-addr")
            .arg(self.spec.peer_addr.to_string())
            .arg("--data-dir")
            .arg(&self.spec.data_dir)
            .arg("--log")
            .arg(log_level)
            .arg("--log-format")
            .arg("text")
            .args(
                self.spec
                    .metrics_addr
                    .map(|addr| format!("--metrics-addr={addr}")),
            )
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(name, value)| (name, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        let child = command
            .spawn()
            .with_context(|| format!("spawn {command:?}"))?;
        tracing::info!(
            node = self.spec.id,
            pid = child.id(),
            api = %self.spec.api_addr,
            peer = %self.spec.peer_addr,
            log = %self.spec.log_path.display(),
            "node process started"
        );
        self.child = Some(child);
        Ok(())
    }

    /// Polls Status until the node answers with its own id, or fails if the process exits first.
    async fn wait_serving(&mut self, timeout: Duration) -> Result<(), StartError> {
        let deadline = Instant::now() + timeout;
        let mut client =
            channel::cluster_client_with_timeout(self.spec.api_addr, Duration::from_secs(1));
        loop {
            // The exit check comes first: another process holding our port could answer Status.
            if !self.is_running() {
                let log = self.current_log();
                let lowered = log.to_lowercase();
                if lowered.contains("address already in use") || lowered.contains("addrinuse") {
                    return Err(StartError::AddrInUse(tail(&log, 20)));
                }
                return Err(StartError::Other(anyhow::anyhow!(
                    "node {} exited during start-up; its output:\n{}",
                    self.spec.id,
                    tail(&log, 40)
                )));
            }
            if let Ok(response) = client.status(StatusRequest {}).await {
                let status: StatusResponse = response.into_inner();
                if status.node_id == self.spec.id {
                    return Ok(());
                }
                tracing::warn!(
                    node = self.spec.id,
                    answered = status.node_id,
                    "another node answers on this node's API address"
                );
            }
            if Instant::now() >= deadline {
                return Err(StartError::Other(anyhow::anyhow!(
                    "node {} did not answer Status on {} within {timeout:?}; its output:\n{}",
                    self.spec.id,
                    self.spec.api_addr,
                    tail(&self.current_log(), 40)
                )));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends SIGTERM and waits up to `grace` for the process to exit, then sends SIGKILL.
    pub async fn stop(&mut self, grace: Duration) -> anyhow::Result<Option<ExitStatus>> {
        // A stopped process would not act on SIGTERM until continued.
        self.resume()?;
        let Some(child) = self.child.as_mut() else {
            return Ok(None);
        };
        if child.try_wait()?.is_none() {
            // The child is not reaped yet, so its PID cannot have been reused by another process.
            let status = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("run kill -TERM")?;
            if !status.success() {
                tracing::warn!(node = self.spec.id, %status, "kill -TERM failed");
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            if let Some(status) = child.try_wait()? {
                tracing::info!(node = self.spec.id, %status, "node stopped");
                let pid = child.id();
                self.child = None;
                self.reaped(pid);
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    node = self.spec.id,
                    ?grace,
                    "node ignored SIGTERM; killing it"
                );
                return self.kill();
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Sends SIGKILL and reaps the process (a paused one is continued first, so that nothing of it
    /// is left stopped even if the kill were to fail).
    pub fn kill(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if let Err(error) = self.resume() {
            tracing::warn!(
                node = self.spec.id,
                "SIGCONT before SIGKILL failed: {error:#}"
            );
        }
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        // An error here means the process already exited; wait() below reaps it either way.
        let _ = child.kill();
        let status = child.wait().context("wait for killed node")?;
        self.reaped(child.id());
        tracing::info!(node = self.spec.id, %status, "node killed");
        Ok(Some(status))
    }

    /// Cleans up after a process that was reaped: what libfaketime leaves in `/dev/shm`.
    fn reaped(&self, pid: u32) {
        if crate::clock::is_faked(&self.spec.env) {
            crate::clock::remove_leftovers(pid);
        }
    }

    /// The output of the current (or last) start.
    pub fn current_log(&self) -> String {
        read_from(&self.spec.log_path, self.log_offset)
    }

    /// The last `lines` lines of the whole log file, across restarts.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&read_from(&self.spec.log_path, 0), lines)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Err(error) = self.kill() {
            eprintln!("failed to kill node {}: {error:#}", self.spec.id);
        }
    }
}

/// Sends `SIG<name>` to `pid` with the `kill` command. The caller holds the unreaped `Child`, so
/// the PID cannot have been reused by another process.
fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("run kill -{name} {pid}"))?;
    if !status.success() {
        bail!("kill -{name} {pid} failed: {status}");
    }
    Ok(())
}

/// The `conclave-node` binary: `$CONCLAVE_NODE_BIN`, else the one beside this test executable's
/// directory (`target/<profile>/deps/<test>` runs `target/<profile>/conclave-node`).
pub fn node_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = BINARY.get_or_init(|| {
        let path = match std::env::var_os(NODE_BIN_ENV) {
            Some(path) => PathBuf::from(path),
            None => {
                let exe = std::env::current_exe().map_err(|error| error.to_string())?;
                let profile_dir = exe
                    .parent()
                    .and_then(Path::parent)
                    .ok_or_else(|| format!("{} has no grandparent directory", exe.display()))?;
                profile_dir.join("conclave-node")
            }
        };
        if !path.is_file() {
            return Err(format!(
                "the node binary {} does not exist: run `cargo build --workspace --bins` first \
                 (with the same CARGO_TARGET_DIR and profile), or set {NODE_BIN_ENV}",
                path.display()
            ));
        }
        let modified = fs::metadata(&path)
            .and_then(|metadata| metadata.modified())
            .ok();
        tracing::info!(binary = %path.display(), ?modified, "using node binary");
        Ok(path)
    });
    match found {
        Ok(path) => Ok(path.clone()),
        Err(message) => bail!("{message}"),
    }
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = File::open(path) {
        if file.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = file.read_to_end(&mut text);
        }
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The last `lines` lines of `text`, without terminal colour codes (the node colours its text logs).
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    strip_ansi(&all[all.len().saturating_sub(lines)..].join("\n"))
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // Skip the sequence up to and including its final letter.
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_without_colour_codes() {
        let text = "one\n\u{1b}[2mtwo\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m x\nthree\n";
        assert_eq!(tail(text, 2), "two  INFO x\nthree");
        assert_eq!(tail(text, 10), "one\ntwo  INFO x\nthree");
    }
}
