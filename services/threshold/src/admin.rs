//! The admin port: `GET /metrics` in the Prometheus text format, for a
//! carrier without an OpenTelemetry collector.

use std::net::SocketAddr;
use std::sync::Arc;

use threshold_telemetry::Telemetry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Options shared by the commands that serve.
#[derive(clap::Args, Clone)]
pub(crate) struct TelemetryArgs {
    /// Logs on stderr as `text` or `json` lines (filter with RUST_LOG).
    #[arg(long, default_value = "text")]
    log_format: threshold_telemetry::LogFormat,
    /// Share of new traces recorded when OTEL_EXPORTER_OTLP_ENDPOINT is set.
    #[arg(long, default_value_t = 0.01)]
    trace_sample: f64,
    /// Serve metrics for scraping at http://ADDR/metrics (plaintext: a
    /// non-loopback address needs --insecure).
    #[arg(long)]
    pub(crate) admin: Option<SocketAddr>,
}

/// Installs telemetry for a serving process, and its admin port if asked.
pub(crate) async fn start(
    args: &TelemetryArgs,
) -> Result<Arc<Telemetry>, Box<dyn std::error::Error + Send + Sync>> {
    let telemetry = Arc::new(Telemetry::init(&threshold_telemetry::Config {
        service: "threshold".into(),
        log_format: args.log_format,
        sample_ratio: args.trace_sample,
    })?);
    if let Some(addr) = args.admin {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for metrics: {e}"))?;
        println!("metrics on http://{}/metrics", listener.local_addr()?);
        let t = Arc::clone(&telemetry);
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                let t = Arc::clone(&t);
                tokio::spawn(async move {
                    let mut buf = [0u8; 2048];
                    let Ok(n) = conn.read(&mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..n]);
                    let (status, kind, body) = if head.starts_with("GET /metrics") {
                        ("200 OK", "text/plain; version=0.0.4", t.prometheus())
                    } else {
                        ("404 Not Found", "text/plain", "GET /metrics\n".to_owned())
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
    }
    Ok(telemetry)
}
