//! OTLP export of the spans that follow a traced task (`--otlp-endpoint`, off by default).
//!
//! A task submitted with a W3C `traceparent` keeps it (the `conclave.traceparent` label); the
//! node that accepts the submit and the node that hands the task to an agent each record a span,
//! a child of that traceparent: `conclave.task.submitted` and `conclave.task.assigned`. They go
//! through `tracing` (target [`TARGET`], filtered apart from the logs) to the OpenTelemetry SDK,
//! whose batch processor exports them over OTLP/gRPC (tonic) on the node's own runtime. The
//! exec agent hands the same traceparent to its command, so the command's spans join the trace.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::runtime::TokioCurrentThread;
use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
use opentelemetry_sdk::trace::{BatchConfigBuilder, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The `tracing` target of the exported spans; nothing else is exported.
pub const TARGET: &str = "conclave_trace";

/// How long the batch processor waits before exporting what it holds.
const EXPORT_DELAY: Duration = Duration::from_millis(200);

/// The tracer provider exporting to `endpoint` (e.g. `http://127.0.0.1:4317`). Call inside the
/// node's runtime; shut it down (off the runtime's thread) when the node stops, to flush.
pub fn provider(endpoint: &str, node_id: u64) -> anyhow::Result<SdkTracerProvider> {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| anyhow::anyhow!("--otlp-endpoint {endpoint:?}: {e}"))?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(EXPORT_DELAY)
        .build();
    let processor = BatchSpanProcessor::builder(exporter, TokioCurrentThread)
        .with_batch_config(batch)
        .build();
    let resource = Resource::builder()
        .with_service_name("conclave-node")
        .with_attribute(KeyValue::new("conclave.node_id", node_id as i64))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build())
}

/// The `tracing` layer that hands [`TARGET`]'s spans to `provider`, and only those.
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    let tracer = provider.tracer("conclave-node");
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(Targets::new().with_target(TARGET, tracing::Level::INFO))
}

/// Records the span `name` for `task_id`, a child of `traceparent` (W3C); nothing without an
/// exporter (the span is disabled) or with a traceparent that does not parse.
pub fn mark(name: &'static str, traceparent: &str, task_id: u64) {
    let span = tracing::info_span!(target: TARGET, "task", otel.name = name, task_id);
    if span.is_disabled() {
        return;
    }
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}
