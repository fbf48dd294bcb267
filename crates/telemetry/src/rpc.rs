//! `rpc.server.duration`, per OpenTelemetry's RPC conventions: a tower layer
//! for the gRPC server, measuring each call from its arrival until its
//! response starts (for a streaming call, until the stream opens).
//!
//! Each `rpc.service` and `rpc.method` value is a series of its own, and
//! the path of a request is the caller's to choose, also before it is
//! authenticated (the layer sits outside authentication, so refused calls
//! are measured too). A layer built with [`RpcMetricsLayer::for_services`]
//! or [`RpcMetricsLayer::for_methods`] therefore knows the paths the server
//! serves, and records any other path as `rpc.service="unknown"`,
//! `rpc.method="unknown"` ([`UNKNOWN`], exported as `UNKNOWN_RPC`): an
//! outsider cannot grow the number of series by inventing paths.
//! [`RpcMetricsLayer::default`] knows no list and labels every path as it
//! came; it is for tests and tools, not for a server facing the network.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Histogram, Meter};
use prost::Message;

/// The `rpc.service` and `rpc.method` of a path no service serves.
pub const UNKNOWN: &str = "unknown";

/// The paths a server serves, without their leading `/`
/// (`threshold.v1.ManifestService/LoadManifest`).
type Known = Arc<HashSet<String>>;

/// Adds [`RpcMetrics`] to every service of a server.
#[derive(Clone)]
pub struct RpcMetricsLayer {
    duration: Histogram<f64>,
    /// `None`: every path is labelled as it came.
    known: Option<Known>,
}

impl Default for RpcMetricsLayer {
    /// Labels every path as it came: see the module docs before using it on
    /// a server.
    fn default() -> Self {
        Self::with_meter(&opentelemetry::global::meter("threshold.rpc"), None)
    }
}

impl RpcMetricsLayer {
    fn with_meter(meter: &Meter, known: Option<Known>) -> Self {
        Self {
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_unit("s")
                .with_description("Inbound gRPC calls, until their response starts")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                ])
                .build(),
            known,
        }
    }

    /// Labels only `paths` (`/package.Service/Method`, the leading `/`
    /// optional); every other path is recorded as [`UNKNOWN`].
    pub fn for_methods<I>(paths: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let known = paths
            .into_iter()
            .map(|p| p.as_ref().trim_start_matches('/').to_owned())
            .collect();
        Self::with_meter(
            &opentelemetry::global::meter("threshold.rpc"),
            Some(Arc::new(known)),
        )
    }

    /// Labels only the methods of `services` (full names, as tonic's
    /// `NamedService::NAME`: `threshold.v1.ManifestService`), as a protobuf
    /// `FileDescriptorSet` (`descriptor_set`, e.g. the API crate's, the one
    /// reflection serves) declares them, plus the `extra` paths (services
    /// not in the set, such as health checks). Every other path, also an
    /// unknown method of a known service, is recorded as [`UNKNOWN`].
    pub fn for_services(
        descriptor_set: &[u8],
        services: &[&str],
        extra: &[&str],
    ) -> Result<Self, prost::DecodeError> {
        let set = prost_types::FileDescriptorSet::decode(descriptor_set)?;
        let mut paths: Vec<String> = extra.iter().map(|p| (*p).to_owned()).collect();
        for file in &set.file {
            let package = file.package();
            for service in &file.service {
                let name = if package.is_empty() {
                    service.name().to_owned()
                } else {
                    format!("{package}.{}", service.name())
                };
                if services.contains(&name.as_str()) {
                    paths.extend(
                        service
                            .method
                            .iter()
                            .map(|m| format!("{name}/{}", m.name())),
                    );
                }
            }
        }
        Ok(Self::for_methods(paths))
    }
}

impl<S> tower::Layer<S> for RpcMetricsLayer {
    type Service = RpcMetrics<S>;
    fn layer(&self, inner: S) -> RpcMetrics<S> {
        RpcMetrics {
            inner,
            duration: self.duration.clone(),
            known: self.known.clone(),
        }
    }
}

/// A gRPC service with its calls timed.
#[derive(Clone)]
pub struct RpcMetrics<S> {
    inner: S,
    duration: Histogram<f64>,
    known: Option<Known>,
}

/// The `rpc.service` and `rpc.method` of `path` (without its leading `/`).
fn labels(known: Option<&Known>, path: &str) -> (String, String) {
    match known {
        Some(known) if !known.contains(path) => (UNKNOWN.to_owned(), UNKNOWN.to_owned()),
        _ => {
            let (service, method) = path.split_once('/').unwrap_or((path, ""));
            (service.to_owned(), method.to_owned())
        }
    }
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
        let (service, method) = labels(
            self.known.as_ref(),
            request.uri().path().trim_start_matches('/'),
        );
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
            duration.record(
                started.elapsed().as_secs_f64(),
                &[
                    KeyValue::new("rpc.system", "grpc"),
                    KeyValue::new("rpc.service", service),
                    KeyValue::new("rpc.method", method),
                    KeyValue::new("rpc.grpc.status_code", status),
                ],
            );
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
    use tower::{Layer, Service, ServiceExt};

    /// Calls `paths` through `layer(known)` and renders what was recorded.
    async fn record(known: Option<Vec<&str>>, paths: &[&str]) -> String {
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_reader(crate::prometheus::Shared(Arc::clone(&reader)))
            .build();
        let known = known.map(|k| {
            let layer = RpcMetricsLayer::for_methods(k);
            layer.known.expect("a list")
        });
        let layer = RpcMetricsLayer::with_meter(&provider.meter("test"), known);
        let mut service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .header("grpc-status", "12")
                    .body(())
                    .expect("response"),
            )
        }));
        for path in paths {
            let request = http::Request::builder()
                .uri(format!("http://localhost{path}"))
                .body(())
                .expect("request");
            service
                .ready()
                .await
                .expect("ready")
                .call(request)
                .await
                .expect("call");
        }
        crate::prometheus::render(&reader)
    }

    fn series(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| l.starts_with("rpc_server_duration_count"))
            .collect()
    }

    #[tokio::test]
    async fn a_path_no_service_serves_is_one_unknown_series() {
        let known = vec![
            "/threshold.v1.ManifestService/LoadManifest",
            "grpc.health.v1.Health/Check",
        ];
        let mut paths = vec![
            "/threshold.v1.ManifestService/LoadManifest",
            "/grpc.health.v1.Health/Check",
        ];
        let invented: Vec<String> = (0..50)
            .map(|n| format!("/threshold.v1.ManifestService/Guess{n}"))
            .chain((0..50).map(|n| format!("/attacker.Service{n}/M")))
            .chain(["/".into(), "/no-slash".into()])
            .collect();
        paths.extend(invented.iter().map(String::as_str));
        let text = record(Some(known), &paths).await;
        let lines = series(&text);
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.contains("rpc_method=\"LoadManifest\"")
                    && l.contains("rpc_service=\"threshold.v1.ManifestService\"")),
            "{text}"
        );
        assert!(
            lines.iter().any(|l| l.contains("rpc_method=\"Check\"")),
            "{text}"
        );
        let unknown = lines
            .iter()
            .find(|l| l.contains("rpc_method=\"unknown\""))
            .expect("one unknown series");
        assert!(unknown.contains("rpc_service=\"unknown\""), "{unknown}");
        assert!(
            unknown.ends_with(" 102"),
            "every invented path in it: {unknown}"
        );
    }

    #[tokio::test]
    async fn without_a_list_every_path_is_labelled_as_it_came() {
        let text = record(None, &["/a.S/M1", "/a.S/M2"]).await;
        assert_eq!(series(&text).len(), 2, "{text}");
        assert!(!text.contains("unknown"), "{text}");
    }

    #[test]
    fn a_descriptor_set_names_the_methods_of_the_services_served() {
        use prost_types::{
            FileDescriptorProto, FileDescriptorSet, MethodDescriptorProto, ServiceDescriptorProto,
        };
        let service = |name: &str, methods: &[&str]| ServiceDescriptorProto {
            name: Some(name.into()),
            method: methods
                .iter()
                .map(|m| MethodDescriptorProto {
                    name: Some((*m).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let set = FileDescriptorSet {
            file: vec![FileDescriptorProto {
                package: Some("threshold.v1".into()),
                service: vec![
                    service("ManifestService", &["LoadManifest"]),
                    service("AccessService", &["IssueGrant", "RevokeGrant"]),
                ],
                ..Default::default()
            }],
        };
        let layer = RpcMetricsLayer::for_services(
            &set.encode_to_vec(),
            &["threshold.v1.AccessService"],
            &["/grpc.health.v1.Health/Check"],
        )
        .expect("decodes");
        let known = layer.known.as_ref();
        let label = |p: &str| labels(known, p);
        assert_eq!(
            label("threshold.v1.AccessService/IssueGrant"),
            ("threshold.v1.AccessService".into(), "IssueGrant".into())
        );
        assert_eq!(label("grpc.health.v1.Health/Check").1, "Check");
        // A service not served, and a method not declared: unknown.
        assert_eq!(
            label("threshold.v1.ManifestService/LoadManifest").1,
            UNKNOWN
        );
        assert_eq!(label("threshold.v1.AccessService/Nope").1, UNKNOWN);
        assert!(RpcMetricsLayer::for_services(b"\xff\xff", &[], &[]).is_err());
    }
}
