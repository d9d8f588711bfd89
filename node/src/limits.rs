//! Every size and count that can grow, named in one place. Exceeding a request limit is an
//! INVALID_ARGUMENT naming the field; exceeding a store quota is RESOURCE_EXHAUSTED.

// The request limits are part of the wire contract and live with it.
pub use conclave_proto::limits::*;

/// Most keys the store holds.
pub const STORE_KEYS_MAX: u64 = 2_000_000;
/// Most key and value bytes the store holds (the in-memory state is also what a snapshot copies).
pub const STORE_BYTES_MAX: u64 = 1024 * 1024 * 1024;

/// Most bytes of change history kept for watches (the revision count is a node option).
pub const WATCH_HISTORY_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// Most concurrently open watch streams per node.
pub const WATCH_STREAMS_MAX: usize = 10_000;
/// Most events sent in one watch message batch before yielding to other streams.
pub const WATCH_BATCH_REVISIONS: usize = 256;
/// Default of --watch-progress-ms: how long a KV or task watch stream sends nothing before it
/// sends a progress notice (kv.proto WatchResponse, tasks.proto BOOKMARK), if its cursor moved
/// meanwhile. Short enough that a quiet watch's resume point stays far inside the kept history
/// (100,000 revisions or events) at any plausible write rate; long enough that the notices of
/// 10,000 watches cost little.
pub const WATCH_PROGRESS_MS: u64 = 5_000;

/// Most clients whose write results are remembered for deduplication.
pub const SESSIONS_MAX: usize = 100_000;
/// Most remembered write results per client.
pub const SESSION_RESPONSES_MAX: usize = 1024;
/// A client silent for this long (cluster time) is forgotten.
pub const SESSION_IDLE_MS: u64 = 60 * 60 * 1000;

/// Most writes a node is proposing at once (waiting to commit); more are refused at once with
/// RESOURCE_EXHAUSTED, so a flood cannot grow the leader's queues without bound.
pub const MAX_INFLIGHT_WRITES: usize = 16_384;
/// Most concurrent requests one API connection may have in flight.
pub const API_CONCURRENCY_PER_CONNECTION: usize = 1024;
/// Largest snapshot chunk sent to a peer, in bytes.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;
/// Largest peer message accepted (an append batch or a snapshot chunk), in bytes.
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most agent session streams (Agents.Session) one node serves at once.
pub const SESSION_STREAMS_MAX: usize = 10_000;
/// Most events queued for one session, watch or wait stream before it waits for its client.
pub const STREAM_BUFFER_EVENTS: usize = 64;
/// Most tasks a queue watch sends as SNAPSHOT events before the changes (tasks.proto).
pub const WATCH_SNAPSHOT_TASKS_MAX: usize = 1000;
/// How often a node proposes the heartbeats its session streams received, as one entry.
pub const HEARTBEAT_BATCH_MS: u64 = 200;
/// Most assignments in the one Assign entry the leader's scheduler has in flight.
pub const MAX_ASSIGN_BATCH: usize = 1024;
/// How long an idempotency key is remembered (tasks.proto: "the retention window (24 hours)").
pub const IDEMPOTENCY_RETENTION_MS: u64 = 24 * 60 * 60 * 1000;
/// How long an agent whose session is gone is still listed (agents.proto: "kept for 1 hour").
pub const GONE_AGENTS_RETENTION_MS: u64 = 60 * 60 * 1000;

/// Most tasks the cluster holds that are not yet forgotten (tasks.proto, RESOURCE_EXHAUSTED).
pub const TASKS_MAX: u64 = 1_000_000;
/// Most registered agents, live or gone (agents.proto).
pub const AGENTS_MAX: usize = 10_000;
/// Most open decisions (decisions.proto).
pub const OPEN_DECISIONS_MAX: usize = 10_000;
/// Length of the coordination event ring that session, task and decision streams follow.
pub const COORD_EVENTS_MAX: usize = 100_000;
/// Most tasks one ListTasks page examines (tasks.proto): a filter the indexes cannot answer (labels,
/// parent) ends the page early with `more` set, so that no listing holds the state for long.
pub const TASK_LIST_SCAN_MAX: usize = 10_000;
/// Most attempts kept in a task's history (the oldest are dropped).
pub const ATTEMPT_HISTORY_MAX: usize = 100;
/// Largest ListAgents answer, in bytes (there is no paging: 10,000 agents of typical size fit).
pub const AGENT_LIST_BYTES_MAX: usize = 64 * 1024 * 1024;

/// Most locks, semaphores and elections held or waited for at once (locks.proto, RESOURCE_EXHAUSTED).
pub const LOCKS_MAX: usize = 10_000;
/// Most requests queued for one lock, semaphore or election (locks.proto, RESOURCE_EXHAUSTED).
pub const LOCK_WAITERS_MAX: usize = 1_000;
/// Most barriers, waiting or closed and not yet forgotten (barriers.proto, RESOURCE_EXHAUSTED).
pub const BARRIERS_MAX: usize = 10_000;
/// How long a closed barrier stays readable before it is forgotten (barriers.proto).
pub const BARRIER_KEEP_MS: u64 = 10 * 60 * 1000;
/// Most grant tokens a failed `holds` compare of a transaction reports (the lowest ones; a
/// semaphore may have up to 10,000 holders): keeps a remembered transaction answer small
/// (transactions.proto FailedCompare.grants).
pub const TXN_COMPARE_TOKENS_MAX: usize = 16;
/// Most workflows running, waiting or compensating at once (workflows.proto, RESOURCE_EXHAUSTED).
pub const WORKFLOWS_OPEN_MAX: usize = 10_000;
/// Most workflows one ListWorkflows page examines (workflows.proto): a filter ends the page early
/// with `more` set, so that no listing holds the state for long.
pub const WORKFLOW_LIST_SCAN_MAX: usize = 10_000;
/// Largest answer of the Workflows service (and what a node forwarding to it accepts): a Get
/// carries an instance's recorded bytes (WORKFLOW_BYTES_MAX) and its definition (at most
/// WORKFLOW_STEPS_MAX steps of WORKFLOW_PARAMS_BYTES_MAX params each), plus the framing of each
/// step and branch; above the 4 MiB (2 x MAX_REQUEST_BYTES) of the other services.
pub const WORKFLOW_RESPONSE_BYTES_MAX: usize = 16 * 1024 * 1024;
const _: () = assert!(
    WORKFLOW_RESPONSE_BYTES_MAX
        >= WORKFLOW_BYTES_MAX + WORKFLOW_STEPS_MAX * WORKFLOW_PARAMS_BYTES_MAX + 1024 * 1024
);

/// Most queues the metrics endpoint reports per-queue series for (`conclave_tasks`,
/// `conclave_queue_*`), in queue-name order; the others are counted in
/// `conclave_metrics_queues_omitted`. Queue names are the clients' to choose, and every series
/// costs the scraper memory.
pub const METRICS_QUEUES_MAX: usize = 1000;

/// Most topics (topics.proto, RESOURCE_EXHAUSTED).
pub const TOPICS_MAX: usize = 1_000;
/// Most bytes of messages (subject, key, header names and values, data) and dead letters kept
/// over all topics: a Publish past it is RESOURCE_EXHAUSTED and stores nothing (topics.proto).
pub const TOPICS_STORE_BYTES_MAX: u64 = 512 * 1024 * 1024;
/// Most consumer groups of one topic.
pub const TOPIC_GROUPS_MAX: usize = 64;
/// Most members one group remembers; a new member then forgets the one least recently seen
/// that holds no delivery, or is refused when every one holds some.
pub const TOPIC_GROUP_MEMBERS_MAX: usize = 1_000;
/// Most deliveries of one group in flight (leased to members, not yet acked) at once.
pub const TOPIC_GROUP_IN_FLIGHT_MAX: usize = 10_000;
/// Most dead letters one group keeps; past it the oldest (lowest sequence) is dropped.
pub const TOPIC_GROUP_DEAD_LETTERS_MAX: usize = 10_000;
/// How long a Publish's idempotency key is remembered (JetStream's duplicate window).
pub const TOPIC_DUPLICATE_WINDOW_MS: u64 = 2 * 60 * 1000;
/// Most idempotency keys one topic remembers within the window; past it the oldest is forgotten.
pub const TOPIC_DUPLICATE_KEYS_MAX: usize = 100_000;
/// Most messages one Fetch examines, so that a fetch against a long backlog of messages its
/// group's filter or key order skips does not hold apply for long.
pub const TOPIC_FETCH_SCAN_MAX: usize = 10_000;
/// Most messages one subscription reads from the state per read lock.
pub const TOPIC_SUBSCRIBE_READ_MAX: usize = 256;
