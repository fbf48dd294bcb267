//! Where the server records a refusal besides the log: its metrics, read
//! as Prometheus text the way an admin port serves them. The process's
//! meter provider is installed once, before any sandbox starts, because
//! the services take their instruments from it when they are built.
//!
//! Under nextest every test is a process of its own; under `cargo test`
//! the tests of this target share one provider, so counts are read as
//! lower bounds (another test may only add to them).

use std::sync::OnceLock;

use opentelemetry_sdk::trace::InMemorySpanExporter;
use threshold_telemetry::{Config, LogFormat, Telemetry};

use crate::calls::Rpc;

static TELEMETRY: OnceLock<Telemetry> = OnceLock::new();

/// Installs this process's meter provider, once; call it before starting
/// a sandbox whose metrics a test reads.
pub(crate) fn install() {
    TELEMETRY.get_or_init(|| {
        Telemetry::build::<InMemorySpanExporter>(
            &Config {
                service: "adversarial".into(),
                log_format: LogFormat::Text,
                sample_ratio: 0.0,
            },
            None,
            None,
        )
    });
}

/// The sum of the series of `metric` whose labels include all of
/// `labels`, now.
pub(crate) fn value(metric: &str, labels: &[(&str, &str)]) -> f64 {
    let text = TELEMETRY
        .get()
        .expect("recorded::install was called first")
        .prometheus();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, rest) = series.split_once('{').unwrap_or((series, ""));
            (name == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

/// The calls to `rpc` the server answered with status `code`.
pub(crate) fn calls(rpc: Rpc, code: tonic::Code) -> f64 {
    let (service, method) = rpc.path();
    value(
        "rpc_server_duration_count",
        &[
            ("rpc_service", service),
            ("rpc_method", method),
            ("rpc_grpc_status_code", &(code as i32).to_string()),
        ],
    )
}
