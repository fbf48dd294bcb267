//! `rpc.server.duration`, per OpenTelemetry's RPC conventions: a tower layer
//! for the gRPC server, measuring each call from its arrival until its
//! response starts (for a streaming call, until the stream opens).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;

/// Adds [`RpcMetrics`] to every service of a server.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    duration: Histogram<f64>,
}

impl Default for RpcMetricsLayer {
    fn default() -> Self {
        Self {
            duration: opentelemetry::global::meter("threshold.rpc")
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description("Inbound gRPC calls, until their response starts")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
        }
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            duration: self.duration.clone(),
        }
    }
}

/// A gRPC service with its calls timed.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    duration: Histogram<f64>,
}

impl<S, B, R> tower::Service<http::Request<B>> for RpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().trim_start_matches('/').to_owned();
        let started = Instant::now();
        let call = self.inner.call(request);
        let duration = self.duration.clone();
        Box::pin(async move {
            let response = call.await;
            // A status in the headers ends the call there (errors, and
            // trailers-only answers); otherwise it is 0 until the trailers.
            let status = match &response {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(0),
                Err(_) => 13,
            };
            let (service, method) = path.split_once('/').unwrap_or((path.as_str(), ""));
            duration.record(
                started.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service.to_owned()),
                    KeyValue::new("rpc.method", method.to_owned()),
                    KeyValue::new("rpc.grpc.status_code", status),
                ],
            );
            response
        })
    }
}
