//! The Conclave node: Raft replication (openraft) over RocksDB, and the gRPC API.
//!
//! See ARCHITECTURE.md for the layers and their invariants.

pub mod config;
pub mod error;
pub mod grpc;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod otel;
pub mod raft;
pub mod state_machine;
pub mod storage;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use conclave_proto::v1::agents_server::AgentsServer;
use conclave_proto::v1::barriers_server::BarriersServer;
use conclave_proto::v1::cluster_server::ClusterServer;
use conclave_proto::v1::decisions_server::DecisionsServer;
use conclave_proto::v1::elections_server::ElectionsServer;
use conclave_proto::v1::kv_server::KvServer;
use conclave_proto::v1::locks_server::LocksServer;
use conclave_proto::v1::raft_peer_server::RaftPeerServer;
use conclave_proto::v1::tasks_server::TasksServer;
use conclave_proto::v1::topics_server::TopicsServer;
use conclave_proto::v1::transactions_server::TransactionsServer;
use conclave_proto::v1::workflows_server::WorkflowsServer;
use openraft::SnapshotPolicy;
use tokio::sync::watch;
use tonic::server::NamedService;

pub use config::Config;
use grpc::forward::Forwarder;
use grpc::gateway::Gateway;
use limits::{
    AGENT_LIST_BYTES_MAX, API_CONCURRENCY_PER_CONNECTION, MAX_PEER_MESSAGE_BYTES,
    MAX_REQUEST_BYTES, WORKFLOW_RESPONSE_BYTES_MAX,
};
use node::Node;

/// Runs a node until `shutdown` resolves (or a server fails), then stops Raft cleanly.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let raft_config = openraft::Config {
        cluster_name: "conclave".into(),
        heartbeat_interval: config.heartbeat_ms,
        election_timeout_min: config.election_timeout_min_ms,
        election_timeout_max: config.election_timeout_max_ms,
        // raft::snapshots decides when (it weighs the log against the state's size too).
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: config.snapshot_keep_logs,
        install_snapshot_timeout: config.election_timeout_max_ms.max(1000),
        // A node that cannot win (partitioned, restarted, removed) asks first instead of bumping
        // its term and disrupting a healthy leader when it reconnects.
        enable_pre_vote: Some(true),
        // Send entries to followers as soon as the leader has written them, not after its own
        // fsync: the leader's and the followers' fsyncs then overlap instead of adding up.
        // Commit still needs a quorum of fsynced copies, the leader's counted only once synced.
        broadcast_submitted_on_append: Some(true),
        // Standard Raft: a restarted leader wins a new election before it leads again. openraft's
        // shortcut assumes a durably applied state machine, and ours is in memory.
        enable_leader_restore: Some(false),
        ..Default::default()
    }
    .validate()
    .context("invalid Raft timing options")?;

    let dial_overrides = parse_peer_dial(&config.peer_dial)?;
    // Bind before anything else, so a taken port fails the start at once.
    let peer_listener = tokio::net::TcpListener::bind(&config.peer_addr)
        .await
        .with_context(|| format!("binding --peer-addr {}", config.peer_addr))?;
    let api_listener = tokio::net::TcpListener::bind(&config.api_addr)
        .await
        .with_context(|| format!("binding --api-addr {}", config.api_addr))?;
    let metrics_listener = match &config.metrics_addr {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding --metrics-addr {addr}"))?,
        ),
        None => None,
    };

    if config.unsafe_test_mode != config::UnsafeTestMode::None {
        tracing::warn!(mode = ?config.unsafe_test_mode, "UNSAFE TEST MODE: this node breaks Conclave's guarantees on purpose");
    }
    let sync_appends = config.unsafe_test_mode != config::UnsafeTestMode::AckBeforeFsync;
    let retention = state_machine::Retention {
        history_revisions_max: config.watch_history,
        coord_events_max: config.coord_events,
    };
    let (log_store, state_machine) = storage::open(&config.data_dir, retention, sync_appends)
        .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let state = state_machine.shared();
    let storage_stats = log_store.stats();
    let append_timeout_min = std::time::Duration::from_millis(config.election_timeout_min_ms);
    let network = raft::network::PeerNetwork::new(dial_overrides, append_timeout_min);
    let raft = raft::Raft::new(
        config.node_id,
        Arc::new(raft_config),
        network.clone(),
        log_store,
        state_machine,
    )
    .await
    .context("starting Raft")?;

    let raft_counters = Arc::new(raft::metrics::RaftCounters::default());
    raft.set_metrics_recorder(Some(raft_counters.clone()))
        .await
        .context("installing the Raft metrics recorder")?;
    let metrics = Arc::new(metrics::Metrics::new(&raft_counters, storage_stats.clone()));
    let node = Arc::new(Node {
        id: config.node_id,
        config: config.clone(),
        raft: raft.clone(),
        state,
        raft_counters,
        peers: network,
        heartbeats: raft::heartbeats::Heartbeats::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let peer_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(
            RaftPeerServer::new(grpc::peer::PeerService::new(node.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
        .serve_with_incoming_shutdown(accept_nodelay(peer_listener), stopped(stop_rx.clone()));

    let forwarder = Forwarder::default();
    // One gateway (and so one bound on the writes in flight) for every service of this node.
    let gateway = Gateway::new(node.clone(), forwarder.clone(), stop_rx.clone());
    let services = api_services();
    // Health starts NOT_SERVING (tonic-health's default for "" is SERVING): grpc/health.rs
    // turns it SERVING once this node knows a leader and has caught up.
    let (health_reporter, health_server) = tonic_health::server::health_reporter();
    grpc::health::set_all(
        &health_reporter,
        &services,
        tonic_health::ServingStatus::NotServing,
    )
    .await;
    // Only the services of this address are listed (not the peer service, whose descriptor is
    // in the same set).
    let reflection = || {
        services.iter().chain(&STANDARD_SERVICES).fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(conclave_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, service| builder.with_service_name(*service),
        )
    };
    let reflection_v1 = reflection()
        .build_v1()
        .context("building the reflection service")?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .context("building the reflection service")?;
    let mut known_services = services.clone();
    known_services.extend(STANDARD_SERVICES);
    let api_server = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .concurrency_limit_per_connection(API_CONCURRENCY_PER_CONNECTION)
        .layer(metrics.grpc_layer(&known_services))
        .add_service(health_server)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(
            KvServer::new(grpc::kv::KvService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(ClusterServer::new(grpc::cluster::ClusterService::new(
            node.clone(),
            forwarder,
        )))
        .add_service(
            TasksServer::new(grpc::tasks::TasksService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            AgentsServer::new(grpc::agents::AgentsService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(AGENT_LIST_BYTES_MAX),
        )
        .add_service(
            DecisionsServer::new(grpc::decisions::DecisionsService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            LocksServer::new(grpc::locks::LocksService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            ElectionsServer::new(grpc::locks::ElectionsService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            BarriersServer::new(grpc::barriers::BarriersService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            TopicsServer::new(grpc::topics::TopicsService::new(gateway.clone()))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            TransactionsServer::new(grpc::transactions::TransactionsService::new(
                gateway.clone(),
            ))
            .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
            .max_encoding_message_size(2 * MAX_REQUEST_BYTES),
        )
        .add_service(
            WorkflowsServer::new(grpc::workflows::WorkflowsService::new(gateway))
                .max_decoding_message_size(2 * MAX_REQUEST_BYTES)
                .max_encoding_message_size(WORKFLOW_RESPONSE_BYTES_MAX),
        )
        .serve_with_incoming_shutdown(accept_nodelay(api_listener), stopped(stop_rx.clone()));

    tracing::info!(
        node_id = config.node_id,
        api_addr = %config.api_addr,
        peer_addr = %config.peer_addr,
        data_dir = %config.data_dir.display(),
        "node started"
    );
    let mut peer_task = tokio::spawn(peer_server);
    let mut api_task = tokio::spawn(api_server);
    let mut metrics_task = match metrics_listener {
        Some(listener) => {
            tracing::info!(metrics_addr = %listener.local_addr()?, "serving metrics");
            tokio::spawn(metrics::http::serve(
                listener,
                metrics.clone(),
                node.clone(),
                stop_rx.clone(),
            ))
        }
        // Never finishes: the select below then waits on the other servers only.
        None => tokio::spawn(std::future::pending::<std::io::Result<()>>()),
    };
    let health_task = tokio::spawn(grpc::health::run(
        node.clone(),
        health_reporter,
        services,
        stop_rx.clone(),
    ));
    let raft_events_task = {
        let metrics = metrics.clone();
        let node = node.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { metrics.follow_raft(node, stop).await })
    };
    // Background work: the heartbeat batches of this node's session streams, and (while this
    // node leads) the ticker and the scheduler. Both end when the node stops.
    let heartbeat_task = tokio::spawn(raft::heartbeats::run(node.clone(), stop_rx.clone()));
    let scheduler_task = tokio::spawn(raft::scheduler::run(node.clone(), stop_rx.clone()));
    let snapshot_task = tokio::spawn(raft::snapshots::run(
        raft.clone(),
        storage_stats,
        raft::snapshots::Policy {
            min_entries: config.snapshot_logs,
            log_percent: config.snapshot_log_percent,
        },
        stop_rx,
    ));
    let failed = tokio::select! {
        () = shutdown => {
            tracing::info!("shutting down");
            None
        }
        result = &mut peer_task => Some(("peer server", joined(result))),
        result = &mut api_task => Some(("API server", joined(result))),
        result = &mut metrics_task => Some(("metrics server", joined(result))),
    };
    let _ = stop_tx.send(true);
    let _ = health_task.await;
    let _ = raft_events_task.await;
    let _ = heartbeat_task.await;
    let _ = scheduler_task.await;
    let _ = snapshot_task.await;
    let _ = raft.shutdown().await;
    if let Some((server, result)) = failed {
        result.with_context(|| format!("{server} stopped"))?;
        anyhow::bail!("{server} stopped unexpectedly");
    }
    // Servers drain in-flight calls; bound it, so one stuck client cannot keep the process alive.
    if config.metrics_addr.is_none() {
        metrics_task.abort();
    }
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN, async {
        peer_task.await?.context("peer server")?;
        let _ = metrics_task.await;
        api_task.await?.context("API server")
    })
    .await;
    match drained {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!(
                ?SHUTDOWN_DRAIN,
                "open calls did not finish in time; exiting anyway"
            );
            Ok(())
        }
    }
}

/// The Conclave services of the API address, by their gRPC names: what health reports on and
/// what the metrics layer labels by name.
fn api_services() -> Vec<&'static str> {
    use grpc::{
        agents::AgentsService, barriers::BarriersService, cluster::ClusterService,
        decisions::DecisionsService, kv::KvService, locks::ElectionsService, locks::LocksService,
        tasks::TasksService, topics::TopicsService, transactions::TransactionsService,
        workflows::WorkflowsService,
    };
    vec![
        KvServer::<KvService>::NAME,
        ClusterServer::<ClusterService>::NAME,
        TasksServer::<TasksService>::NAME,
        AgentsServer::<AgentsService>::NAME,
        DecisionsServer::<DecisionsService>::NAME,
        LocksServer::<LocksService>::NAME,
        ElectionsServer::<ElectionsService>::NAME,
        BarriersServer::<BarriersService>::NAME,
        WorkflowsServer::<WorkflowsService>::NAME,
        TopicsServer::<TopicsService>::NAME,
        TransactionsServer::<TransactionsService>::NAME,
    ]
}

/// The standard services served beside them (health and reflection).
const STANDARD_SERVICES: [&str; 3] = [
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// A server task's end as one result: its panic or its error.
fn joined<E: Into<anyhow::Error>>(
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> anyhow::Result<()> {
    result?.map_err(Into::into)
}

/// How long a stopping node waits for open calls to finish.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

fn parse_peer_dial(entries: &[String]) -> anyhow::Result<HashMap<u64, String>> {
    entries
        .iter()
        .map(|entry| {
            let (id, addr) = entry
                .split_once('=')
                .with_context(|| format!("--peer-dial {entry:?}: expected ID=ADDR"))?;
            Ok((
                id.parse()
                    .with_context(|| format!("--peer-dial {entry:?}: bad id"))?,
                addr.to_string(),
            ))
        })
        .collect()
}

/// Accepted connections with Nagle's algorithm off. The builder's `tcp_nodelay` applies only to
/// listeners tonic binds itself, not to an incoming stream we hand it; without this, small pushes
/// (assignments on a session stream, one-entry appends) wait for the peer's delayed ACK, ~40 ms.
fn accept_nodelay(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
