//! The metrics of this process in the Prometheus text exposition format
//! (version 0.0.4), read on demand from a manual reader.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData, ResourceMetrics};
use opentelemetry_sdk::metrics::reader::MetricReader;
use opentelemetry_sdk::metrics::{InstrumentKind, ManualReader, Pipeline, Temporality};

/// A manual reader the provider and the scrape endpoint share.
#[derive(Debug)]
pub(crate) struct Shared(pub(crate) Arc<ManualReader>);

impl MetricReader for Shared {
    fn register_pipeline(&self, pipeline: std::sync::Weak<Pipeline>) {
        self.0.register_pipeline(pipeline);
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// `threshold.events.appended` → `threshold_events_appended`.
fn name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn labels<'a>(attrs: impl Iterator<Item = &'a KeyValue>, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = attrs
        .map(|kv| {
            let v = kv
                .value
                .to_string()
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{}=\"{v}\"", name(kv.key.as_str()))
        })
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn number(x: f64) -> String {
    if x.is_infinite() {
        if x > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{x}")
    }
}

trait Value: Copy {
    fn f(self) -> f64;
}
impl Value for f64 {
    fn f(self) -> f64 {
        self
    }
}
impl Value for u64 {
    fn f(self) -> f64 {
        self as f64
    }
}
impl Value for i64 {
    fn f(self) -> f64 {
        self as f64
    }
}

fn write<T: Value>(out: &mut String, metric: &str, help: &str, data: &MetricData<T>) {
    let base = name(metric);
    match data {
        MetricData::Sum(sum) => {
            let (n, kind) = if sum.is_monotonic() {
                (format!("{base}_total"), "counter")
            } else {
                (base.clone(), "gauge")
            };
            let _ = writeln!(out, "# HELP {n} {help}\n# TYPE {n} {kind}");
            for p in sum.data_points() {
                let _ = writeln!(
                    out,
                    "{n}{} {}",
                    labels(p.attributes(), None),
                    number(p.value().f())
                );
            }
        }
        MetricData::Gauge(g) => {
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} gauge");
            for p in g.data_points() {
                let _ = writeln!(
                    out,
                    "{base}{} {}",
                    labels(p.attributes(), None),
                    number(p.value().f())
                );
            }
        }
        MetricData::Histogram(h) => {
            let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} histogram");
            for p in h.data_points() {
                let mut cumulative = 0u64;
                for (bound, count) in p
                    .bounds()
                    .chain(std::iter::once(f64::INFINITY))
                    .zip(p.bucket_counts())
                {
                    cumulative += count;
                    let _ = writeln!(
                        out,
                        "{base}_bucket{} {cumulative}",
                        labels(p.attributes(), Some(("le", number(bound))))
                    );
                }
                let l = labels(p.attributes(), None);
                let _ = writeln!(out, "{base}_sum{l} {}", number(p.sum().f()));
                let _ = writeln!(out, "{base}_count{l} {}", p.count());
            }
        }
        MetricData::ExponentialHistogram(_) => {}
    }
}

/// Every metric the reader sees now, as Prometheus text.
pub(crate) fn render(reader: &ManualReader) -> String {
    let mut rm = ResourceMetrics::default();
    if let Err(e) = reader.collect(&mut rm) {
        return format!("# metrics unavailable: {e}\n");
    }
    let mut out = String::new();
    for scope in rm.scope_metrics() {
        for m in scope.metrics() {
            let help = m.description().replace('\n', " ");
            match m.data() {
                AggregatedMetrics::F64(d) => write(&mut out, m.name(), &help, d),
                AggregatedMetrics::U64(d) => write(&mut out, m.name(), &help, d),
                AggregatedMetrics::I64(d) => write(&mut out, m.name(), &help, d),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;

    #[test]
    fn counters_gauges_and_histograms_render_as_prometheus_text() {
        let reader = Arc::new(ManualReader::builder().build());
        let provider = SdkMeterProvider::builder()
            .with_reader(Shared(Arc::clone(&reader)))
            .build();
        let meter = provider.meter("test");
        let appended = meter
            .u64_counter("threshold.events.appended")
            .with_description("Events appended")
            .build();
        appended.add(
            3,
            &[
                KeyValue::new("category", "parcel"),
                KeyValue::new("country", "SE"),
            ],
        );
        appended.add(
            1,
            &[
                KeyValue::new("category", "grant"),
                KeyValue::new("country", "NO"),
            ],
        );
        let lag = meter
            .i64_up_down_counter("threshold.outcome.subscribers")
            .build();
        lag.add(2, &[]);
        let latency = meter
            .f64_histogram("threshold.append.duration")
            .with_boundaries(vec![0.001, 0.01])
            .build();
        for x in [0.0005, 0.002, 0.5] {
            latency.record(x, &[]);
        }
        let text = render(&reader);
        assert!(
            text.contains("# TYPE threshold_events_appended_total counter"),
            "{text}"
        );
        assert!(
            text.contains("threshold_events_appended_total{category=\"parcel\",country=\"SE\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE threshold_outcome_subscribers gauge"),
            "{text}"
        );
        assert!(text.contains("threshold_outcome_subscribers 2"), "{text}");
        assert!(
            text.contains("threshold_append_duration_bucket{le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("threshold_append_duration_bucket{le=\"0.01\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("threshold_append_duration_bucket{le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(text.contains("threshold_append_duration_count 3"), "{text}");
    }
}
