//! `conclave agent ...`: the fleet as operators see it (ls, get, drain, undrain), and `agent run`,
//! the exec agent.

use clap::Subcommand;
use conclave_client::{
    unix_ms_now, Agent, AgentListOptions, AgentStatus, BreakerState, ReadConsistency,
};
use serde_json::json;

use super::agent_run::{self, RunArgs};
use super::output::{self, header_json};
use super::render::{agent_json, agent_status_name, breaker_name, labels_text, list_text};
use super::when::{format_duration, format_relative, format_rfc3339};
use super::{CliError, CliResult, Globals};

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// List agents: status, capabilities, running/max tasks, drained, breaker, failures, expiry.
    Ls {
        /// Only agents with this capability.
        #[arg(long)]
        capability: Option<String>,
        /// Include agents whose session is gone (kept for an hour).
        #[arg(long)]
        all: bool,
        /// Read the serving node's local state instead of confirming with a quorum; may be stale.
        #[arg(long)]
        serializable: bool,
    },
    /// Show one agent. Exits 1 when there is no such agent.
    Get { name: String },
    /// Stop assigning new tasks to an agent; its running tasks go on.
    Drain { name: String },
    /// Let a drained agent take new tasks again.
    Undrain { name: String },
    /// Run an exec agent: each assigned task runs COMMAND with the payload on stdin.
    ///
    /// Registers NAME (replacing a live session of that name unless --no-replace), keeps its
    /// session alive, and runs up to --concurrency tasks at once. For each task, COMMAND runs in its
    /// own process group with the payload on stdin and these variables set: CONCLAVE_TASK_ID,
    /// CONCLAVE_ATTEMPT, CONCLAVE_QUEUE, CONCLAVE_FENCING_TOKEN, CONCLAVE_CORRELATION_ID,
    /// CONCLAVE_CHECKPOINT (from an earlier attempt's progress), CONCLAVE_CONTENT_TYPE,
    /// CONCLAVE_AGENT, CONCLAVE_ENDPOINTS, and TRACEPARENT when the task was submitted with a W3C
    /// traceparent.
    ///
    /// Its stdout, up to 1 MiB, is the result. Exit 0 completes the task; exit 75 (EX_TEMPFAIL)
    /// fails it retryably (it runs again after its backoff, while attempts remain); any other exit,
    /// a death by signal, or more than 1 MiB of output fails it for good (dead-lettered), with the
    /// last 4 KiB of stderr as the error. The lease is extended every third of its length while the
    /// command runs. When the task is canceled or its lease is lost, the command's process group
    /// gets SIGTERM, then SIGKILL after --kill-grace.
    ///
    /// SIGINT or SIGTERM stops taking work, lets running commands finish for up to
    /// --shutdown-grace, releases what still runs (no attempt is counted), closes the session and
    /// exits 0; a second signal skips the grace. If the session expires (the agent was cut off
    /// for longer than its TTL), running commands are stopped and the agent registers again. One
    /// line per task is logged to stderr.
    #[command(
        override_usage = "conclave agent run --name <NAME> [--capability <C>]... [OPTIONS] -- <COMMAND> [ARGS]..."
    )]
    Run(RunArgs),
}

pub async fn run(command: AgentCommand, globals: &Globals) -> CliResult {
    if let AgentCommand::Run(args) = command {
        return agent_run::run(args, globals).await;
    }
    let client = globals.client()?;
    let json = globals.json;
    match command {
        AgentCommand::Ls {
            capability,
            all,
            serializable,
        } => {
            let list = client
                .list_agents(AgentListOptions {
                    capability: capability.unwrap_or_default(),
                    include_gone: all,
                    consistency: if serializable {
                        ReadConsistency::Serializable
                    } else {
                        ReadConsistency::Linearizable
                    },
                })
                .await?;
            if json {
                return output::json_document(&json!({
                    "header": header_json(&list.header),
                    "agents": list.agents.iter().map(agent_json).collect::<Vec<_>>(),
                    "count": list.agents.len(),
                }));
            }
            if list.agents.is_empty() {
                return output::line("no agents");
            }
            output::line(&agents_table(&list.agents, unix_ms_now()))
        }
        AgentCommand::Get { name } => {
            let read = not_found_is_failure(client.get_agent(&name).await, &name)?;
            if json {
                return output::json_document(&json!({
                    "header": header_json(&read.header),
                    "agent": agent_json(&read.agent),
                }));
            }
            print_agent(&read.agent)
        }
        AgentCommand::Drain { ref name } | AgentCommand::Undrain { ref name } => {
            let drain = matches!(command, AgentCommand::Drain { .. });
            let name = name.clone();
            let read = if drain {
                client.drain(&name).await
            } else {
                client.undrain(&name).await
            };
            let read = not_found_is_failure(read, &name)?;
            if json {
                return output::json_document(&json!({
                    "header": header_json(&read.header),
                    "agent": agent_json(&read.agent),
                }));
            }
            let running = read.agent.running.len();
            if drain {
                output::line(&format!(
                    "drained agent {name}: no new tasks; {running} running task{} go on",
                    if running == 1 { "" } else { "s" }
                ))
            } else {
                output::line(&format!("undrained agent {name}: it takes new tasks again"))
            }
        }
        AgentCommand::Run(_) => unreachable!("handled above"),
    }
}

/// The `agent ls` table.
pub fn agents_table(agents: &[Agent], now_ms: u64) -> String {
    let mut rows = vec![[
        "NAME",
        "STATUS",
        "CAPABILITIES",
        "RUNNING",
        "DRAINED",
        "BREAKER",
        "FAILURES",
        "DONE",
        "EXPIRES",
    ]
    .map(String::from)
    .to_vec()];
    for agent in agents {
        let max = agent.max_concurrent.max(1);
        rows.push(vec![
            agent.name.clone(),
            agent_status_name(agent.status()).to_ascii_uppercase(),
            list_text(&agent.capabilities),
            format!("{}/{max}", agent.running.len()),
            if agent.drained { "yes" } else { "no" }.to_string(),
            breaker_text(agent, now_ms),
            format!("{} ({} total)", agent.consecutive_failures, agent.failed),
            agent.completed.to_string(),
            match agent.status() {
                AgentStatus::Live => format_relative(agent.session_expires_unix_ms, now_ms),
                _ => "-".to_string(),
            },
        ]);
    }
    output::table(&rows)
}

fn breaker_text(agent: &Agent, now_ms: u64) -> String {
    match agent.breaker() {
        BreakerState::Open if agent.breaker_until_unix_ms > now_ms => format!(
            "OPEN until {}",
            format_relative(agent.breaker_until_unix_ms, now_ms)
        ),
        breaker => breaker_name(breaker).to_ascii_uppercase(),
    }
}

fn print_agent(agent: &Agent) -> CliResult {
    let now = unix_ms_now();
    let when = |ms: u64| {
        if ms == 0 {
            "-".to_string()
        } else {
            format!("{} ({})", format_rfc3339(ms), format_relative(ms, now))
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |name: &str, value: String| rows.push(vec![name.to_string(), value]);
    row("agent", agent.name.clone());
    row(
        "status",
        agent_status_name(agent.status()).to_ascii_uppercase(),
    );
    row("session", agent.session_id.to_string());
    row("capabilities", list_text(&agent.capabilities));
    row("labels", labels_text(&agent.labels));
    if !agent.version.is_empty() {
        row("version", agent.version.clone());
    }
    if !agent.metadata.is_empty() {
        row("metadata", labels_text(&agent.metadata));
    }
    let running: Vec<String> = agent.running.iter().map(u64::to_string).collect();
    row(
        "running",
        format!(
            "{}/{} (reported load {}){}",
            agent.running.len(),
            agent.max_concurrent.max(1),
            agent.reported_load,
            if running.is_empty() {
                String::new()
            } else {
                format!(": tasks {}", running.join(", "))
            }
        ),
    );
    row("drained", if agent.drained { "yes" } else { "no" }.into());
    row("breaker", breaker_text(agent, now));
    row(
        "failures",
        format!(
            "{} in a row, {} in all",
            agent.consecutive_failures, agent.failed
        ),
    );
    row("completed", agent.completed.to_string());
    row(
        "ttl",
        format_duration(std::time::Duration::from_millis(agent.ttl_ms)),
    );
    row("registered", when(agent.registered_unix_ms));
    row("last heartbeat", when(agent.last_heartbeat_unix_ms));
    if agent.status() == AgentStatus::Live {
        row("expires", when(agent.session_expires_unix_ms));
    }
    output::line(&output::table(&rows))
}

fn not_found_is_failure<T>(result: conclave_client::Result<T>, name: &str) -> CliResult<T> {
    match result {
        Err(error) if error.is_not_found() => {
            Err(CliError::failed(format!("agent {name:?} not found")))
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_the_fleet() {
        let now = 1_700_000_000_000;
        let agents = vec![
            Agent {
                name: "editor".into(),
                status: AgentStatus::Live.into(),
                capabilities: vec!["edit".into(), "review".into()],
                max_concurrent: 2,
                running: vec![7],
                breaker: BreakerState::Open.into(),
                breaker_until_unix_ms: now + 25_000,
                consecutive_failures: 5,
                failed: 6,
                completed: 10,
                session_expires_unix_ms: now + 8_000,
                ..Agent::default()
            },
            Agent {
                name: "gone".into(),
                status: AgentStatus::Gone.into(),
                drained: true,
                ..Agent::default()
            },
        ];
        let table = agents_table(&agents, now);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].starts_with("NAME    STATUS"));
        for cell in [
            "LIVE",
            "edit,review",
            "1/2",
            "OPEN until in 25s",
            "5 (6 total)",
            "in 8s",
        ] {
            assert!(
                lines[1].contains(cell),
                "{cell:?} missing in {:?}",
                lines[1]
            );
        }
        assert!(lines[2].contains("GONE") && lines[2].contains("yes") && lines[2].contains("0/1"));
    }
}
