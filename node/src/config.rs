//! Node options: command-line flags, each also settable by environment variable.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Debug, Parser)]
#[command(
    name = "conclave-node",
    version,
    about = "A Conclave node: one member of a Raft-replicated coordination cluster."
)]
pub struct Config {
    /// This node's id in the cluster: a non-zero integer, unique and never reused.
    #[arg(long = "id", env = "CONCLAVE_NODE_ID", value_parser = clap::value_parser!(u64).range(1..))]
    pub node_id: u64,

    /// Address for clients and agents (KV, Cluster, Tasks, Agents, Decisions).
    #[arg(long, env = "CONCLAVE_API_ADDR", default_value = "127.0.0.1:7001")]
    pub api_addr: String,

    /// Address for Raft traffic from peers only (append, vote, snapshot).
    #[arg(long, env = "CONCLAVE_PEER_ADDR", default_value = "127.0.0.1:7101")]
    pub peer_addr: String,

    /// Address for Prometheus metrics over HTTP (`GET /metrics`, the text exposition format), such
    /// as 127.0.0.1:7201. Unset: no metrics endpoint. Bind it where only your scraper can reach it:
    /// the metrics name queues and agents.
    #[arg(long, env = "CONCLAVE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,

    /// Directory for the RocksDB database (log, vote, snapshot). Created if missing.
    #[arg(long, env = "CONCLAVE_DATA_DIR", default_value = ".conclave/data")]
    pub data_dir: PathBuf,

    /// How often the leader sends heartbeats, in milliseconds.
    #[arg(long, env = "CONCLAVE_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,

    /// Lower bound of the randomized election timeout, in milliseconds. A follower that hears no
    /// leader for this long (plus a random part up to the maximum) starts an election.
    #[arg(long, env = "CONCLAVE_ELECTION_TIMEOUT_MIN_MS", default_value_t = 500)]
    pub election_timeout_min_ms: u64,

    /// Upper bound of the randomized election timeout, in milliseconds.
    #[arg(long, env = "CONCLAVE_ELECTION_TIMEOUT_MAX_MS", default_value_t = 1000)]
    pub election_timeout_max_ms: u64,

    /// Build a snapshot (and let the log before it be purged) once at least this many log entries
    /// were applied since the last one (and --snapshot-log-percent allows).
    #[arg(long, env = "CONCLAVE_SNAPSHOT_LOGS", default_value_t = 10_000)]
    pub snapshot_logs: u64,

    /// A snapshot also waits until the log written since the last one is at least this percentage
    /// of the last snapshot's size, so that with a large state, building snapshots costs a bounded
    /// number of bytes per byte of log instead of a full copy every --snapshot-logs entries.
    /// 0 snapshots on --snapshot-logs alone.
    #[arg(long, env = "CONCLAVE_SNAPSHOT_LOG_PERCENT", default_value_t = 100)]
    pub snapshot_log_percent: u64,

    /// Log entries kept behind the latest snapshot, so slightly lagging followers catch up from
    /// the log instead of a full snapshot. 0 purges everything the snapshot covers.
    #[arg(long, env = "CONCLAVE_SNAPSHOT_KEEP_LOGS", default_value_t = 1000)]
    pub snapshot_keep_logs: u64,

    /// Revisions of change history kept for watches (also bounded to 64 MiB). A watch starting
    /// before the oldest kept revision fails as compacted.
    #[arg(long, env = "CONCLAVE_WATCH_HISTORY", default_value_t = 100_000)]
    pub watch_history: usize,

    /// How long a KV or task watch stream may send nothing while events it does not watch go by
    /// before it sends a progress notice (the revision or sequence it has reached), in
    /// milliseconds, so that the watcher's resume point stays inside the kept history. 0 sends
    /// none.
    #[arg(long, env = "CONCLAVE_WATCH_PROGRESS_MS", default_value_t = crate::limits::WATCH_PROGRESS_MS)]
    pub watch_progress_ms: u64,

    /// How long a request waits for a leader (during an election, say) before the node answers
    /// UNAVAILABLE, in milliseconds. Also bounds how long a write waits to commit.
    #[arg(long, env = "CONCLAVE_LEADER_WAIT_MS", default_value_t = 3000)]
    pub leader_wait_ms: u64,

    /// Finished tasks (SUCCEEDED or CANCELED) kept for reading before the oldest are forgotten.
    /// Dead-lettered tasks are kept until redriven or purged.
    #[arg(long, env = "CONCLAVE_TASK_RETENTION_COUNT", default_value_t = 100_000)]
    pub task_retention_count: u64,

    /// How long finished tasks and closed decisions are kept, in milliseconds (default 24 hours).
    #[arg(long = "task-retention-ms", env = "CONCLAVE_TASK_RETENTION_MS", default_value_t = 24 * 60 * 60 * 1000)]
    pub task_retention_ms: u64,

    /// Log filter in tracing's env-filter syntax, such as `info` or `conclave_node=debug,info`.
    #[arg(long = "log", env = "CONCLAVE_LOG", default_value = "info")]
    pub log_filter: String,

    /// Log line format.
    #[arg(long, env = "CONCLAVE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export the spans of traced tasks (submitted with a W3C traceparent) over OTLP/gRPC to this
    /// collector, e.g. `http://127.0.0.1:4317`. Off by default.
    #[arg(long, env = "CONCLAVE_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,

    /// Test-only: dial peer ID at ADDR instead of its membership address (`ID=ADDR`, repeatable).
    /// Fault-injection tests put a proxy there; the membership keeps the real addresses.
    #[arg(
        long = "peer-dial",
        env = "CONCLAVE_PEER_DIAL",
        value_delimiter = ',',
        hide = true
    )]
    pub peer_dial: Vec<String>,

    /// Test-only: coordination events kept for session, task and decision streams
    /// (COORD_EVENTS_MAX), so that tests can outrun the history without 100,000 events. Like
    /// --watch-history, a bound of this node's copy only: replicas may differ.
    #[arg(long, env = "CONCLAVE_COORD_EVENTS", default_value_t = crate::limits::COORD_EVENTS_MAX, hide = true)]
    pub coord_events: usize,

    /// Test-only: break a guarantee on purpose, so the fault-injection suite can show it notices.
    /// Never use it for anything else.
    #[arg(long, env = "CONCLAVE_UNSAFE_TEST_MODE", value_enum, default_value_t = UnsafeTestMode::None, hide = true)]
    pub unsafe_test_mode: UnsafeTestMode,
}

/// Deliberately unsafe behaviours for testing the tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UnsafeTestMode {
    /// Safe: the only mode for real use.
    None,
    /// Answer "linearizable" reads from the local state on any node, without ReadIndex.
    StaleReads,
    /// Acknowledge appends to Raft before the write-ahead log is synced to disk.
    AckBeforeFsync,
    /// Drop the fence of fenced writes (kv.proto Fence): a lock holder that lost its lock can
    /// still write.
    SkipFence,
    /// Let a stale lease complete a workflow step's task: the leader sends a Complete of a task
    /// that has a workflow origin with the task's current token instead of the stale one it
    /// carries (`Node::stale_step_result`), so a worker whose lease was taken away records the
    /// step's result.
    StaleStepResult,
    /// Break the atomicity of cross-primitive transactions: the leader proposes a transaction of
    /// two or more ops as two entries, first its compares with every op but the last (without a
    /// request id), then the last op alone with the request id (`Node::txn_partial`). So a
    /// transaction whose last op is refused (a stale token) still applies its other ops, and
    /// readers can see the first part without the last.
    TxnPartial,
    /// Let a stale delivery's Ack count: the leader gives a topic Ack whose token is not the
    /// message's current delivery the current delivery's token (`Node::unsafe_topics`), so a
    /// member whose ack wait passed acks a message another member now holds.
    TopicStaleAck,
    /// Turn per-key order off: the leader creates every consumer group as if `unordered` was
    /// asked (`Node::unsafe_topics`), so a key's messages go to several members at once.
    TopicUnordered,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}
