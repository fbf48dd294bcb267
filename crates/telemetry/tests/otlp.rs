//! Spans and metrics reach a real OTLP/gRPC receiver on 127.0.0.1:0, and
//! shutdown flushes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use threshold_telemetry::{Config, LogFormat, Telemetry, otlp};
use tonic::{Request, Response, Status};

/// What the receiver was sent: (service.name, span name) and metric names.
#[derive(Clone, Default)]
struct Received {
    spans: Arc<Mutex<Vec<(String, String)>>>,
    metrics: Arc<Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        for r in &request.get_ref().resource_spans {
            let service = r
                .resource
                .iter()
                .flat_map(|res| &res.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    Value::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for s in r.scope_spans.iter().flat_map(|s| &s.spans) {
                self.spans
                    .lock()
                    .expect("lock")
                    .push((service.clone(), s.name.clone()));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        for m in request
            .get_ref()
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
        {
            self.metrics.lock().expect("lock").push(m.name.clone());
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_metrics_reach_an_otlp_receiver_and_shutdown_flushes_them() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let received = Received::default();
    let server = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(received.clone()))
        .add_service(MetricsServiceServer::new(received.clone()));
    tokio::spawn(async move {
        server
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .expect("receiver");
    });

    let (spans, metrics) = otlp(&format!("http://{addr}")).expect("exporters");
    let telemetry = Telemetry::build(
        &Config {
            service: "threshold-test".into(),
            log_format: LogFormat::Text,
            sample_ratio: 1.0,
        },
        Some(spans),
        Some(metrics),
    );
    let tracer = telemetry
        .tracer_provider()
        .expect("traces are exported")
        .tracer("test");
    tracer.in_span("otlp.check", |_| {});
    opentelemetry::global::meter("test")
        .u64_counter("threshold.test.checks")
        .build()
        .add(1, &[]);
    // Nothing has been exported yet (batches wait); shutdown flushes.
    tokio::task::spawn_blocking(move || telemetry.shutdown(Duration::from_secs(5)))
        .await
        .expect("shutdown");

    let spans = received.spans.lock().expect("lock").clone();
    assert_eq!(
        spans,
        vec![("threshold-test".to_owned(), "otlp.check".to_owned())]
    );
    let metrics = received.metrics.lock().expect("lock").clone();
    assert!(
        metrics.iter().any(|m| m == "threshold.test.checks"),
        "{metrics:?}"
    );
}
