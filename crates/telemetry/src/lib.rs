//! Telemetry for every Threshold process: `tracing` spans and logs,
//! OpenTelemetry traces and metrics, and W3C trace context carried across
//! gRPC calls, log events and subscriptions.
//!
//! [`Telemetry::init`] installs it for a process:
//! - logs as text, or JSON lines with [`LogFormat::Json`], filtered by
//!   `RUST_LOG` (default `info`);
//! - traces and metrics exported over OTLP (gRPC) when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set, traces sampled at the given ratio
//!   (parent-based, so a sampled handheld call stays sampled downstream);
//! - metrics always readable as Prometheus text ([`Telemetry::prometheus`])
//!   for an admin port to serve.
//!
//! [`Telemetry::shutdown`] flushes pending spans and metrics with a time-out.
//!
//! Libraries record through the OpenTelemetry API (`global::meter`) and
//! `tracing`; only this crate knows the SDK.

mod prometheus;
mod rpc;

pub use rpc::{RpcMetrics, RpcMetricsLayer, UNKNOWN as UNKNOWN_RPC};

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue, global};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanExporter};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How logs are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, with the span context.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (text, json)")),
        }
    }
}

/// What to install.
#[derive(Debug, Clone)]
pub struct Config {
    /// `service.name` of this process.
    pub service: String,
    /// How logs look.
    pub log_format: LogFormat,
    /// Share of new traces recorded (0..=1); a sampled parent is always followed.
    pub sample_ratio: f64,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The OTLP exporter could not be built.
    #[error("OTLP exporter for {endpoint}: {detail}")]
    Exporter {
        /// `OTEL_EXPORTER_OTLP_ENDPOINT`.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// A global subscriber was already installed.
    #[error("telemetry is already installed in this process")]
    AlreadyInstalled,
}

/// Telemetry installed for this process; shut it down to flush.
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: SdkMeterProvider,
    reader: Arc<ManualReader>,
}

impl Telemetry {
    /// Installs logs, traces, metrics and the W3C propagator, globally.
    pub fn init(config: &Config) -> Result<Self, Error> {
        let endpoint = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
            .ok()
            .filter(|e| !e.is_empty());
        let (spans, metrics) = match &endpoint {
            Some(e) => {
                let (s, m) = otlp(e)?;
                (Some(s), Some(m))
            }
            None => (None, None),
        };
        let telemetry = Self::build(config, spans, metrics);
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let otel = telemetry
            .tracer
            .as_ref()
            .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("threshold")));
        let registry = tracing_subscriber::registry().with(filter).with(otel);
        let installed = match config.log_format {
            LogFormat::Text => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        // Colour only for a person at a terminal: a
                        // container's or a file's log stays plain text.
                        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                        .with_writer(std::io::stderr),
                )
                .try_init(),
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .with_current_span(true)
                        .with_writer(std::io::stderr),
                )
                .try_init(),
        };
        installed.map_err(|_| Error::AlreadyInstalled)?;
        Ok(telemetry)
    }

    /// The providers, without touching the global subscriber: `spans` and
    /// `metrics` export where given; the propagator and meter provider are
    /// installed globally.
    pub fn build<E: SpanExporter + 'static>(
        config: &Config,
        spans: Option<E>,
        metrics: Option<opentelemetry_otlp::MetricExporter>,
    ) -> Self {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let resource = Resource::builder()
            .with_attributes([KeyValue::new("service.name", config.service.clone())])
            .build();
        let tracer = spans.map(|e| {
            let ratio = config.sample_ratio.clamp(0.0, 1.0);
            let provider = SdkTracerProvider::builder()
                .with_resource(resource.clone())
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    ratio,
                ))))
                .with_batch_exporter(e)
                .build();
            global::set_tracer_provider(provider.clone());
            provider
        });
        let reader = Arc::new(ManualReader::builder().build());
        let mut meter = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(prometheus::Shared(Arc::clone(&reader)));
        if let Some(m) = metrics {
            meter = meter.with_periodic_exporter(m);
        }
        let meter = meter.build();
        global::set_meter_provider(meter.clone());
        Self {
            tracer,
            meter,
            reader,
        }
    }

    /// The tracer provider, when traces are exported.
    pub fn tracer_provider(&self) -> Option<&SdkTracerProvider> {
        self.tracer.as_ref()
    }

    /// Every metric now, in the Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        prometheus::render(&self.reader)
    }

    /// Flushes pending spans and metrics, waiting at most `timeout` for each.
    pub fn shutdown(&self, timeout: Duration) {
        if let Some(Err(e)) = self
            .tracer
            .as_ref()
            .map(|t| t.shutdown_with_timeout(timeout))
        {
            tracing::warn!(error = %e, "flushing spans failed; some may be lost");
        }
        if let Err(e) = self.meter.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "flushing metrics failed; some may be lost");
        }
    }
}

/// OTLP/gRPC exporters of spans and metrics to `endpoint`
/// (`http://host:4317`); the other `OTEL_EXPORTER_OTLP_*` variables apply.
pub fn otlp(
    endpoint: &str,
) -> Result<
    (
        opentelemetry_otlp::SpanExporter,
        opentelemetry_otlp::MetricExporter,
    ),
    Error,
> {
    use opentelemetry_otlp::WithExportConfig as _;
    let failed = |e: String| Error::Exporter {
        endpoint: endpoint.to_owned(),
        detail: e,
    };
    let spans = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let metrics = opentelemetry_otlp::MetricExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    Ok((spans, metrics))
}

/// The `traceparent` of `span`, when it is part of a trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = std::collections::HashMap::new();
    global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.remove("traceparent")
}

/// Whether a `traceparent` says its trace is recorded (the sampled flag).
pub fn sampled(traceparent: &str) -> bool {
    traceparent
        .rsplit('-')
        .next()
        .and_then(|flags| u8::from_str_radix(flags, 16).ok())
        .is_some_and(|f| f & 1 == 1)
}

/// A span made by `make`, in the trace `traceparent` names, when that trace
/// is recorded; otherwise no span at all, so unsampled work costs nothing.
pub fn in_recorded_trace(
    traceparent: Option<&str>,
    make: impl FnOnce() -> tracing::Span,
) -> tracing::Span {
    match traceparent.filter(|tp| sampled(tp)) {
        Some(tp) => {
            let span = make();
            continue_trace(&span, Some(tp));
            span
        }
        None => tracing::Span::none(),
    }
}

/// Makes `span` a child of the trace `traceparent` names (when valid).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(tp) = traceparent else { return };
    let carrier = std::collections::HashMap::from([("traceparent".to_owned(), tp.to_owned())]);
    let cx = global::get_text_map_propagator(|p| p.extract(&carrier));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// gRPC metadata as a propagation carrier.
struct Metadata<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for Metadata<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            value.parse(),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Client side: puts the current span's trace context on every request.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContext;

impl tonic::service::Interceptor for TraceContext {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        let cx = tracing::Span::current().context();
        global::get_text_map_propagator(|p| {
            p.inject_context(&cx, &mut Metadata(request.metadata_mut()))
        });
        Ok(request)
    }
}

/// Server side (`Server::trace_fn`): a span per call, following OpenTelemetry's
/// RPC conventions, child of the caller's trace when it sent one.
pub fn server_span(request: &http::Request<()>) -> tracing::Span {
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    let span = tracing::info_span!(
        "rpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    let parent: Context =
        global::get_text_map_propagator(|p| p.extract(&Headers(request.headers())));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    span
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sampled_flag_is_read_from_a_traceparent() {
        assert!(super::sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!super::sampled(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        assert!(!super::sampled("garbage"));
    }
}
