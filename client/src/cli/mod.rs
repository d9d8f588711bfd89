//! The `conclave` command line: argument definitions, dispatch, and the mapping from outcomes to
//! exit codes.

mod agent;
mod agent_run;
mod barrier;
mod bench;
mod bench_locks;
mod bench_tasks;
mod bench_topic;
mod bench_workflow;
mod cluster;
mod decision;
mod delegate;
mod dlq;
mod election;
mod histogram;
mod hold;
mod kv;
mod lock;
mod output;
mod process_group;
mod render;
mod task;
mod topic;
mod topic_consume;
mod topic_trigger;
mod txn;
mod txn_script;
mod when;
mod workflow;

use std::time::Duration;

use clap::{Parser, Subcommand};
use conclave_client::{Client, ClientOptions};

/// Exit codes: part of the CLI's contract with scripts and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The command did what was asked.
    Ok = 0,
    /// It failed, or the cluster refused it (nothing was applied), or its answer is "no": a
    /// compare-and-swap or transaction whose compare failed, a get of a missing key.
    Failed = 1,
    /// Bad usage: clap's own exit code for malformed arguments, and invalid input found locally.
    Usage = 2,
    /// A write's outcome is unknown: it may or may not have been applied. Also: a task or decision
    /// waited for (`--wait`, `task wait`) had not finished when the wait ended.
    Indeterminate = 3,
}

/// A failure to report: one line on stderr (`error: ...`) and an exit code.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
}

impl CliError {
    pub fn failed(message: impl Into<String>) -> CliError {
        CliError {
            exit: Exit::Failed,
            message: message.into(),
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    /// The outcome is not known yet (exit 3): a task or decision still open when the wait ended.
    pub fn unknown(message: impl Into<String>) -> CliError {
        CliError {
            exit: Exit::Indeterminate,
            message: message.into(),
        }
    }
}

impl From<conclave_client::Error> for CliError {
    fn from(error: conclave_client::Error) -> Self {
        use conclave_client::Error;
        let exit = match &error {
            Error::Indeterminate { .. } => Exit::Indeterminate,
            Error::InvalidInput { .. } => Exit::Usage,
            Error::OpRefused { .. }
            | Error::Rejected { .. }
            | Error::Unavailable { .. }
            | Error::Compacted { .. }
            | Error::LeaseLost { .. }
            | Error::LockLost { .. } => Exit::Failed,
        };
        CliError {
            exit,
            message: error.to_string(),
        }
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;

/// Command line client for a Conclave cluster.
///
/// Exit codes: 0 success; 1 failed or rejected (nothing was applied), or the answer is "no" (a
/// compare that did not hold, a missing key, a task that ended dead-lettered, canceled or
/// expired); 2 bad usage or invalid input; 3 outcome unknown (a write may or may not have been
/// applied; read the key to find out; or a task waited for had not finished when the wait ended).
/// Errors are printed as one line on stderr, starting with `error:`.
#[derive(Debug, Parser)]
#[command(name = "conclave", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct Globals {
    /// Comma-separated API addresses of cluster nodes (host:port or http://host:port). Any subset
    /// works: the client finds the leader and the other members itself.
    #[arg(
        long,
        global = true,
        env = "CONCLAVE_ENDPOINTS",
        value_delimiter = ',',
        default_value = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003"
    )]
    pub endpoints: Vec<String>,
    /// Print machine-readable JSON instead of text (one document; `kv watch` prints one per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds a command may spend, retries included, before giving up. Each single attempt is
    /// also bounded by five seconds or this, whichever is shorter.
    #[arg(long, global = true, value_name = "SECONDS", default_value = "10", value_parser = parse_seconds)]
    pub timeout: Duration,
}

impl Globals {
    /// Client options for these flags.
    pub fn client_options(&self) -> ClientOptions {
        let defaults = ClientOptions::default();
        ClientOptions {
            deadline: self.timeout,
            request_timeout: defaults.request_timeout.min(self.timeout),
            ..defaults
        }
    }

    pub fn client(&self) -> CliResult<Client> {
        Ok(Client::connect_with(
            &self.endpoints,
            self.client_options(),
        )?)
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Node status and cluster membership: status, init, add-learner, promote, remove,
    /// transfer-leader.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Read and write keys: put, get, del, ls, cas, txn, watch.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Submit and follow tasks: submit, get, ls, watch, wait, cancel, history.
    #[command(subcommand)]
    Task(task::TaskCommand),
    /// The dead-letter queue: ls, redrive, purge.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// The agent fleet (ls, get, drain, undrain) and the exec agent (run).
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// Quorum votes among agents: propose, vote, get, ls, watch.
    #[command(subcommand)]
    Decision(decision::DecisionCommand),
    /// Fenced locks: acquire, release, keep-alive, get, ls, watch, and run (a command under a lock).
    #[command(subcommand)]
    Lock(lock::LockCommand),
    /// Semaphores of N permits: acquire, release, keep-alive, get, ls, watch.
    #[command(subcommand)]
    Semaphore(lock::SemaphoreCommand),
    /// Leader elections: campaign (and hold), proclaim, resign, leader, observe.
    #[command(subcommand)]
    Election(election::ElectionCommand),
    /// Barriers of N parties released by k arrivals: enter, get, ls.
    #[command(subcommand)]
    Barrier(barrier::BarrierCommand),
    /// Load generators that print throughput and latency.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Workflows of tasks and decisions: check (a definition file, locally), start, get, ls,
    /// watch, cancel, retry.
    #[command(subcommand)]
    Workflow(workflow::WorkflowCommand),
    /// Event topics: create, ls, get, delete, publish, tail; consumer groups and their dead
    /// letters.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// One transaction across keys, tasks, workflows and locks, from a script: all or nothing.
    Txn(txn::TxnArgs),
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Cluster(command) => cluster::run(command, &cli.globals).await,
        Command::Kv(command) => kv::run(command, &cli.globals).await,
        Command::Task(command) => task::run(command, &cli.globals).await,
        Command::Dlq(command) => dlq::run(command, &cli.globals).await,
        Command::Agent(command) => agent::run(command, &cli.globals).await,
        Command::Decision(command) => decision::run(command, &cli.globals).await,
        Command::Lock(command) => lock::run_lock(command, &cli.globals).await,
        Command::Semaphore(command) => lock::run_semaphore(command, &cli.globals).await,
        Command::Election(command) => election::run(command, &cli.globals).await,
        Command::Barrier(command) => barrier::run(command, &cli.globals).await,
        Command::Bench(command) => bench::run(command, &cli.globals).await,
        Command::Workflow(command) => workflow::run(command, &cli.globals).await,
        Command::Topic(command) => topic::run(command, &cli.globals).await,
        Command::Txn(args) => txn::run(args, &cli.globals).await,
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!(
            "{text:?}: expected a number of seconds above 0 and at most a day"
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn default_endpoints_are_the_three_local_nodes() {
        let cli = Cli::try_parse_from(["conclave", "cluster", "status"]).expect("parses");
        // The environment may override the default; only check when it does not.
        if std::env::var_os("CONCLAVE_ENDPOINTS").is_none() {
            assert_eq!(
                cli.globals.endpoints,
                ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
            );
        }
        assert_eq!(cli.globals.timeout, Duration::from_secs(10));
        let cli = Cli::try_parse_from([
            "conclave",
            "kv",
            "get",
            "k",
            "--endpoints",
            "a:1,b:2",
            "--timeout",
            "0.5",
            "--json",
        ])
        .expect("parses");
        assert_eq!(cli.globals.endpoints, ["a:1", "b:2"]);
        assert_eq!(cli.globals.timeout, Duration::from_millis(500));
        assert!(cli.globals.json);
    }

    #[test]
    fn timeouts_must_be_positive() {
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("x").is_err());
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
    }

    #[test]
    fn client_errors_map_to_exit_codes() {
        use conclave_client::{Code, Error};
        let exit = |error: Error| CliError::from(error).exit;
        assert_eq!(
            exit(Error::Rejected {
                code: Code::InvalidArgument,
                message: String::new()
            }),
            Exit::Failed
        );
        assert_eq!(
            exit(Error::Indeterminate {
                message: String::new()
            }),
            Exit::Indeterminate
        );
        assert_eq!(
            exit(Error::InvalidInput {
                message: String::new()
            }),
            Exit::Usage
        );
        assert_eq!(
            exit(Error::Unavailable {
                message: String::new()
            }),
            Exit::Failed
        );
    }
}
