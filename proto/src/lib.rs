//! Conclave's wire contract: the generated gRPC messages, clients and servers.
//!
//! The `.proto` files in `proto/conclave/v1/` are the API reference; [`limits`] are the request
//! limits and [`validate`] the rules on single fields that node and client both check.

/// Version 1 of the API (`package conclave.v1`).
pub mod v1 {
    tonic::include_proto!("conclave.v1");
}

/// The encoded `FileDescriptorSet` of every Conclave service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("conclave_descriptor");

/// Metadata key carrying the last known leader as `"<id>=<api address>"`.
pub const LEADER_METADATA: &str = "conclave-leader";
/// Metadata key set to `"rejected"` when a failed write was provably not proposed.
pub const OUTCOME_METADATA: &str = "conclave-outcome";
/// Value of [`OUTCOME_METADATA`] for writes that were provably not applied.
pub const OUTCOME_REJECTED: &str = "rejected";
/// Metadata key with the oldest revision a watch can still start from.
pub const COMPACT_REVISION_METADATA: &str = "conclave-compact-revision";
/// Metadata key naming why a FAILED_PRECONDITION was answered, for clients to act on without
/// reading the message: [`REASON_NODE_REMOVED`], [`REASON_LEASE_LOST`] or [`REASON_LOCK_LOST`].
pub const REASON_METADATA: &str = "conclave-reason";
/// Value of [`REASON_METADATA`]: the node that sent the answer (or forwarded the request) has been
/// removed from the cluster; another node may serve the same call.
pub const REASON_NODE_REMOVED: &str = "node-removed";
/// Value of [`REASON_METADATA`]: a task verb's fencing token is stale; the same on every node.
pub const REASON_LEASE_LOST: &str = "lease-lost";
/// Value of [`REASON_METADATA`]: a fenced write's (or a lock verb's) grant is no longer held; the
/// same on every node.
pub const REASON_LOCK_LOST: &str = "lock-lost";
/// Metadata key with the oldest task event sequence still kept, on a task watch's OUT_OF_RANGE.
pub const OLDEST_SEQUENCE_METADATA: &str = "conclave-oldest-sequence";
/// Metadata key on the error of a refused op of a cross-primitive transaction
/// (transactions.proto): the op's index in the request's `ops`. The status itself is the one the
/// op's plain call would have had (FAILED_PRECONDITION with `conclave-reason: lease-lost`,
/// RESOURCE_EXHAUSTED, ...).
pub const OP_INDEX_METADATA: &str = "conclave-op-index";
/// Metadata key set by a node that forwards a request to the leader, so it is not forwarded again.
pub const FORWARDED_METADATA: &str = "conclave-forwarded";

/// Metadata key of a W3C Trace Context `traceparent` (`00-<trace id>-<parent id>-<flags>`),
/// accepted on Submit and SubmitBatch: the task keeps it as the label [`TRACEPARENT_LABEL`] and its
/// agent receives it in `Assignment.traceparent`.
pub const TRACEPARENT_METADATA: &str = "traceparent";
/// The reserved task label that carries a task's `traceparent` (set from [`TRACEPARENT_METADATA`],
/// or given directly, and then checked by [`validate::traceparent`] either way).
pub const TRACEPARENT_LABEL: &str = "conclave.traceparent";

pub mod validate;

/// The request limits of the wire contract (kv.proto lists them). Every node enforces them, and
/// clients may check them before sending.
pub mod limits {
    /// Longest key, in bytes.
    pub const MAX_KEY_BYTES: usize = 4096;
    /// Largest value, in bytes.
    pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
    /// Most compares in one transaction.
    pub const MAX_TXN_COMPARES: usize = 128;
    /// Most puts and deletes in one transaction.
    pub const MAX_TXN_OPS: usize = 128;
    /// Largest encoded request, in bytes.
    pub const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;
    /// Most keys in one page of a list.
    pub const MAX_LIST_LIMIT: u32 = 1000;

    /// Longest queue or agent name, in bytes (characters `[A-Za-z0-9._:/-]`).
    pub const MAX_NAME_BYTES: usize = 128;
    /// Largest task payload or result, in bytes.
    pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;
    /// Most capabilities on one task or agent.
    pub const MAX_CAPABILITIES: usize = 32;
    /// Longest capability, content type or label key, in bytes.
    pub const MAX_SHORT_STRING_BYTES: usize = 128;
    /// Most labels (or metadata entries) on one task, agent or decision.
    pub const MAX_LABELS: usize = 32;
    /// Longest label or metadata value, progress message or checkpoint, in bytes.
    pub const MAX_LABEL_VALUE_BYTES: usize = 1024;
    /// Longest idempotency key or correlation id, in bytes.
    pub const MAX_ID_STRING_BYTES: usize = 256;
    /// Longest error message, cancel reason, question or vote rationale, in bytes.
    pub const MAX_MESSAGE_BYTES: usize = 4096;
    /// Priorities range over `-MAX_PRIORITY ..= MAX_PRIORITY`; higher runs first.
    pub const MAX_PRIORITY: i32 = 1000;
    /// Most attempts a task may be given.
    pub const MAX_ATTEMPTS: u32 = 100;
    /// Attempts when a task does not say.
    pub const DEFAULT_ATTEMPTS: u32 = 3;
    /// Shortest and longest lease (visibility timeout), and the default.
    pub const MIN_LEASE_MS: u64 = 1_000;
    pub const MAX_LEASE_MS: u64 = 3_600_000;
    pub const DEFAULT_LEASE_MS: u64 = 30_000;
    /// Longest retry backoff, initial or maximum.
    pub const MAX_BACKOFF_MS: u64 = 3_600_000;
    /// Backoff defaults.
    pub const DEFAULT_BACKOFF_INITIAL_MS: u64 = 1_000;
    pub const DEFAULT_BACKOFF_MAXIMUM_MS: u64 = 60_000;
    pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
    /// Largest backoff multiplier.
    pub const MAX_BACKOFF_MULTIPLIER: f64 = 10.0;
    /// Most tasks in one SubmitBatch.
    pub const MAX_SUBMIT_BATCH: usize = 1000;
    /// Most tasks or decisions in one page; and the default page.
    pub const MAX_TASK_LIST_LIMIT: u32 = 1000;
    pub const DEFAULT_TASK_LIST_LIMIT: u32 = 100;
    /// Longest WaitTask, and the default.
    pub const MAX_WAIT_MS: u64 = 300_000;
    pub const DEFAULT_WAIT_MS: u64 = 30_000;
    /// Most tasks one agent may hold at once.
    pub const MAX_CONCURRENT: u32 = 1024;
    /// Shortest and longest agent session TTL, and the default.
    pub const MIN_TTL_MS: u64 = 1_000;
    pub const MAX_TTL_MS: u64 = 300_000;
    pub const DEFAULT_TTL_MS: u64 = 10_000;
    /// Breaker defaults: consecutive failures that open it, and its cool-down.
    pub const DEFAULT_BREAKER_FAILURES: u32 = 5;
    pub const DEFAULT_BREAKER_COOLDOWN_MS: u64 = 30_000;
    /// Most options of a decision.
    pub const MAX_OPTIONS: usize = 32;
    /// Most voters in a decision's electorate.
    pub const MAX_ELECTORATE: usize = 1000;
    /// Latest decision deadline, from proposal; and the default.
    pub const MAX_DECISION_DEADLINE_MS: u64 = 7 * 24 * 3_600_000;
    pub const DEFAULT_DECISION_DEADLINE_MS: u64 = 3_600_000;
    /// Largest voter weight.
    pub const MAX_WEIGHT: u64 = 1_000_000;

    /// Locks, semaphores and elections (locks.proto): shortest and longest lease TTL.
    pub const MIN_LOCK_TTL_MS: u64 = 1_000;
    pub const MAX_LOCK_TTL_MS: u64 = 3_600_000;
    /// Longest wait in a lock's queue (also a barrier Enter's wait).
    pub const MAX_LOCK_WAIT_MS: u64 = 300_000;
    /// Longest lock-delay after a lost holder, and the default.
    pub const MAX_LOCK_DELAY_MS: u64 = 60_000;
    pub const DEFAULT_LOCK_DELAY_MS: u64 = 3_000;
    /// Most permits of one semaphore.
    pub const MAX_SEMAPHORE_LIMIT: u32 = 10_000;
    /// Largest election value, in bytes.
    pub const MAX_ELECTION_VALUE_BYTES: usize = 4096;
    /// Most participants of one barrier.
    pub const MAX_BARRIER_PARTIES: u32 = 1000;
    /// Longest barrier timeout.
    pub const MAX_BARRIER_TIMEOUT_MS: u64 = 24 * 3_600_000;

    /// Workflows (workflows.proto): most steps in one definition.
    pub const WORKFLOW_STEPS_MAX: usize = 64;
    /// Longest step name, in bytes (characters `[A-Za-z0-9_-]`).
    pub const WORKFLOW_STEP_NAME_BYTES_MAX: usize = 64;
    /// Most branches of one fan-out step, fixed (`count`) or from a result list (`over`).
    pub const FAN_OUT_WIDTH_MAX: u32 = 256;
    /// Largest `params` of one step (JSON text), in bytes.
    pub const WORKFLOW_PARAMS_BYTES_MAX: usize = 64 * 1024;
    /// Longest workflow, step task or join deadline, relative to its start.
    pub const WORKFLOW_DEADLINE_MS_MAX: u64 = 30 * 24 * 3_600_000;
    /// Largest result of one step: a task's result (the task limit) or a fan-out's joined result.
    pub const WORKFLOW_RESULT_BYTES_MAX: usize = MAX_PAYLOAD_BYTES;
    /// Most bytes one workflow instance records: its input and every result.
    pub const WORKFLOW_BYTES_MAX: usize = 8 * 1024 * 1024;
    /// Deepest manager-worker tree of tasks delegating tasks (agents.proto Delegate; a task
    /// submitted on its own is depth 0, what it delegates depth 1).
    pub const TASK_TREE_DEPTH_MAX: u32 = 8;
    /// Most delegated tasks of one manager task that are not finished (agents.proto Delegate).
    pub const DELEGATED_OPEN_MAX: usize = 1_000;

    /// Topics (topics.proto): longest subject or subject pattern, in bytes.
    pub const TOPIC_SUBJECT_BYTES_MAX: usize = 256;
    /// Most dot-separated tokens in one subject or pattern.
    pub const TOPIC_SUBJECT_TOKENS_MAX: usize = 16;
    /// Most subject patterns one topic captures.
    pub const TOPIC_SUBJECTS_MAX: usize = 16;
    /// Longest topic name, in bytes (a topic name is also a subject: its default patterns are
    /// `NAME` and `NAME.>`).
    pub const TOPIC_NAME_BYTES_MAX: usize = 128;
    /// Largest data of one message, in bytes.
    pub const TOPIC_MESSAGE_DATA_BYTES_MAX: usize = 1024 * 1024;
    /// Longest message key, in bytes.
    pub const TOPIC_MESSAGE_KEY_BYTES_MAX: usize = 256;
    /// Most headers on one message.
    pub const TOPIC_HEADERS_MAX: usize = 32;
    /// Most bytes of header names and values on one message.
    pub const TOPIC_HEADER_BYTES_MAX: usize = 8 * 1024;
    /// Most messages in one Publish.
    pub const TOPIC_PUBLISH_BATCH_MAX: usize = 1000;
    /// Most message bytes (subject, key, headers, data) in one Publish.
    pub const TOPIC_PUBLISH_BATCH_BYTES_MAX: usize = 1536 * 1024;
    /// Most messages one Fetch leases; and the default.
    pub const TOPIC_FETCH_MAX: u32 = 256;
    pub const TOPIC_FETCH_DEFAULT: u32 = 1;
    /// Most message bytes one Fetch leases: it stops once its deliveries reach this (the last one
    /// may pass it; one message is always leased), so that an answer stays below the 4 MiB the
    /// services encode.
    pub const TOPIC_FETCH_BYTES_MAX: u64 = 2 * 1024 * 1024;
    /// Longest Fetch wait.
    pub const TOPIC_FETCH_WAIT_MS_MAX: u64 = 300_000;
    /// Shortest and longest ack wait of a consumer group, and the default.
    pub const TOPIC_ACK_WAIT_MS_MIN: u64 = 1_000;
    pub const TOPIC_ACK_WAIT_MS_MAX: u64 = 3_600_000;
    pub const TOPIC_ACK_WAIT_MS_DEFAULT: u64 = 30_000;
    /// Most deliveries of one message to a group before it is dead-lettered; and the default.
    pub const TOPIC_MAX_DELIVERIES_MAX: u32 = 100;
    pub const TOPIC_MAX_DELIVERIES_DEFAULT: u32 = 5;
    /// Longest Nack delay.
    pub const TOPIC_NACK_DELAY_MS_MAX: u64 = 3_600_000;
    /// Retention maxima of one topic (0 in a request: unlimited, i.e. only the store quota).
    pub const TOPIC_MAX_MSGS_MAX: u64 = 10_000_000;
    pub const TOPIC_MAX_BYTES_MAX: u64 = 1024 * 1024 * 1024;
    pub const TOPIC_MAX_AGE_MS_MAX: u64 = 365 * 24 * 3_600_000;
    /// Most dead letters one Redrive or Purge names by sequence.
    pub const TOPIC_DEAD_LETTER_SEQS_MAX: usize = 1000;
    /// Cross-primitive transactions (transactions.proto): most compares in one.
    pub const MAX_TRANSACTION_COMPARES: usize = 128;
    /// Most ops in one (each submit is one task, each start one workflow).
    pub const MAX_TRANSACTION_OPS: usize = 128;
    /// Largest encoded transaction request, in bytes: every key, value, payload, result,
    /// definition and input together.
    pub const MAX_TRANSACTION_BYTES: usize = MAX_REQUEST_BYTES;
}
