//! OTLP export: a node started with `--otlp-endpoint` sends the spans of a traced task to the
//! collector there, children of the task's traceparent: `conclave.task.submitted` when the submit
//! is accepted, `conclave.task.assigned` when the task is handed to an agent. The collector is a
//! fake one in this test (the OTLP/gRPC TraceService from `opentelemetry-proto`).

use std::sync::{Arc, Mutex};

use anyhow::ensure;
use conclave_client::{AgentConfig, AgentEvent, AgentSession, Client, TaskSpec};
use conclave_tests::poll::eventually;
use conclave_tests::{ClusterConfig, TestCluster};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::{Request, Response, Status};

use crate::SETTLE_TIMEOUT;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// A span as the collector received it: (name, trace id, parent span id), in hex.
type Received = Arc<Mutex<Vec<(String, String, String)>>>;

struct Collector {
    received: Received,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans = request
            .into_inner()
            .resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans);
        let mut received = self.received.lock().expect("not poisoned");
        for span in spans {
            received.push((span.name, hex(&span.trace_id), hex(&span.parent_span_id)));
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves a fake collector on a free loopback port; answers its address and what it received.
async fn collector() -> anyhow::Result<(std::net::SocketAddr, Received)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Received::default();
    let service = TraceServiceServer::new(Collector {
        received: Arc::clone(&received),
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((addr, received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_traced_tasks_spans_reach_the_otlp_collector() -> anyhow::Result<()> {
    let (addr, received) = collector().await?;
    let config = ClusterConfig {
        extra_args: vec![format!("--otlp-endpoint=http://{addr}")],
        ..ClusterConfig::new(1)
    };
    let cluster = TestCluster::start_initialized(config).await?;
    let client = Client::connect([cluster.api_addr(1).to_string()])?;
    let (_session, mut events) =
        AgentSession::register(&client, &AgentConfig::new("traced")).await?;
    let spec = TaskSpec {
        queue: "traced".into(),
        payload: b"work".to_vec(),
        ..TaskSpec::default()
    };
    let traceparent = format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01");
    let task_id = client
        .submit_traced(spec, Some(&traceparent))
        .await?
        .task_id;
    while let Some(event) = events.recv().await {
        if matches!(&event, AgentEvent::Assignment(a) if a.task_id == task_id) {
            break;
        }
    }
    let spans = eventually("both spans exported", SETTLE_TIMEOUT, || async {
        let spans = received.lock().expect("not poisoned").clone();
        let names: Vec<&str> = spans.iter().map(|(name, _, _)| name.as_str()).collect();
        ensure!(
            names.contains(&"conclave.task.submitted") && names.contains(&"conclave.task.assigned"),
            "{spans:?}"
        );
        Ok(spans)
    })
    .await?;
    for (name, trace, parent) in &spans {
        ensure!(trace == TRACE_ID, "{name}: trace {trace}");
        ensure!(parent == PARENT_SPAN_ID, "{name}: parent {parent}");
    }
    cluster.shutdown().await
}
