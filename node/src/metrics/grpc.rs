//! Counts and times the API server's calls, by service, method and status code, under the names
//! go-grpc-prometheus gave them (and etcd's dashboards use): `grpc_server_handled_total` and
//! `grpc_server_handling_seconds`.
//!
//! A call is counted when its response headers leave: a unary call then carries its status (a
//! trailers-only error) or succeeded; a stream is counted when it opens, with the time it took to
//! open. The labels are bounded: a service this node does not serve is `unknown`, and so is the
//! method of a call answered UNIMPLEMENTED (tonic's answer to a method the service lacks).

use std::collections::HashSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};
use tonic::codegen::http::{HeaderMap, Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::Code;

pub(super) struct GrpcMetrics {
    pub(super) handled: IntCounterVec,
    pub(super) handling_seconds: HistogramVec,
}

impl GrpcMetrics {
    pub(super) fn new() -> Self {
        let handled = IntCounterVec::new(
            Opts::new(
                "grpc_server_handled_total",
                "gRPC calls answered on the API address, by service, method and status code \
                 (streams when they open).",
            ),
            &["grpc_service", "grpc_method", "grpc_code"],
        )
        .expect("valid counter");
        let handling_seconds = HistogramVec::new(
            HistogramOpts::new(
                "grpc_server_handling_seconds",
                "Time from a gRPC call's arrival to its response headers (a unary call's answer, \
                 a stream's opening).",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ]),
            &["grpc_service", "grpc_method"],
        )
        .expect("valid histogram");
        GrpcMetrics {
            handled,
            handling_seconds,
        }
    }
}

/// The layer for `tonic::transport::Server::layer`.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: Arc<GrpcMetrics>,
    services: Arc<HashSet<&'static str>>,
}

impl GrpcMetricsLayer {
    pub(super) fn new(metrics: Arc<GrpcMetrics>, services: &[&'static str]) -> Self {
        GrpcMetricsLayer {
            metrics,
            services: Arc::new(services.iter().copied().collect()),
        }
    }
}

impl<S> tower_layer::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetricsService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct GrpcMetricsService<S> {
    inner: S,
    layer: GrpcMetricsLayer,
}

impl<S, B, ResBody> Service<Request<B>> for GrpcMetricsService<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let started = Instant::now();
        // A clone of the URI shares its bytes: no allocation per call.
        let uri = request.uri().clone();
        let layer = self.layer.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => status_code(response.headers()),
                // The transport failed to answer: no gRPC status went out.
                Err(_) => Code::Unknown,
            };
            let (service, mut method) = service_and_method(uri.path(), &layer.services);
            if code == Code::Unimplemented {
                method = "unknown";
            }
            layer
                .metrics
                .handled
                .with_label_values(&[service, method, code_name(code)])
                .inc();
            layer
                .metrics
                .handling_seconds
                .with_label_values(&[service, method])
                .observe(started.elapsed().as_secs_f64());
            response
        })
    }
}

/// `/package.Service/Method` split, with a service this node does not serve as `unknown`.
fn service_and_method<'a>(path: &'a str, services: &HashSet<&'static str>) -> (&'a str, &'a str) {
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let service = parts.next().unwrap_or_default();
    let method = parts.next().unwrap_or_default();
    if services.contains(service) {
        (service, method)
    } else {
        ("unknown", "unknown")
    }
}

/// The status a response's headers carry: a trailers-only answer (every unary error tonic
/// sends) has `grpc-status` there; a response without it is a success so far.
fn status_code(headers: &HeaderMap) -> Code {
    headers
        .get("grpc-status")
        .map_or(Code::Ok, |value| Code::from_bytes(value.as_bytes()))
}

/// go-grpc's names for the codes (`codes.Code.String()`), which dashboards match on.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_known_services_and_methods() {
        let services: HashSet<&'static str> = ["conclave.v1.KV"].into_iter().collect();
        assert_eq!(
            service_and_method("/conclave.v1.KV/Put", &services),
            ("conclave.v1.KV", "Put")
        );
        assert_eq!(
            service_and_method("/evil.Service/Anything", &services),
            ("unknown", "unknown")
        );
        assert_eq!(service_and_method("/", &services), ("unknown", "unknown"));
    }
}
