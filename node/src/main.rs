//! `conclave-node`: parse flags, set up logging, run the node until SIGINT or SIGTERM.

use std::io::IsTerminal;

use clap::Parser;
use conclave_node::config::{Config, LogFormat};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

// One thread per node: a write crosses a dozen tasks (API, Raft core, log I/O, replication, apply)
// and on the two-core machines we run on, cross-thread wake-ups between them cost more than the
// parallelism gains. Measured with `conclave bench kv` on three local nodes: single-client puts
// 930 -> 1,060/s, 256-client puts 14,300 -> 17,600/s. Blocking work (fsync, snapshot encoding and
// decoding) runs on its own threads.
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let filter = EnvFilter::try_new(&config.log_filter)
        .map_err(|e| anyhow::anyhow!("--log {:?}: {e}", config.log_filter))?;
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs.json().boxed(),
    };
    let traces = config
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| conclave_node::otel::provider(endpoint, config.node_id))
        .transpose()?;
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces.as_ref().map(conclave_node::otel::layer))
        .init();
    let result = conclave_node::run(config, shutdown_signal()).await;
    if let Some(traces) = traces {
        // Flushes what is batched; it waits on the exporter, which runs on this runtime.
        let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
    }
    result
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}
