//! `threshold health`: asks a server's gRPC health service whether it is
//! serving, for container health checks and probes. Exit status 0 when
//! it is, 1 (with the reason on stderr) when it is not or cannot be asked.

use std::path::PathBuf;
use std::time::Duration;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::BoxError;

/// Options of `threshold health`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The server.
    #[arg(
        long,
        env = "THRESHOLD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// Trust this CA certificate (PEM) for an https:// server.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
    /// One service's health (e.g. `threshold.v1.ManifestService`); default
    /// the server as a whole.
    #[arg(long, default_value = "")]
    service: String,
    /// Seconds to wait for the answer, connecting included.
    #[arg(long, default_value_t = 3.0, value_parser = seconds)]
    timeout: f64,
}

/// Prints `serving` and returns when the server (or --service) is serving.
pub(crate) async fn check(args: Args) -> Result<(), BoxError> {
    let ca = crate::read_ca(args.ca.as_deref())?;
    let what = if args.service.is_empty() {
        args.server.clone()
    } else {
        format!("{} at {}", args.service, args.server)
    };
    let ask = async {
        let channel = crate::connect(&args.server, ca.as_deref()).await?;
        let answer = HealthClient::new(channel)
            .check(HealthCheckRequest {
                service: args.service.clone(),
            })
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => format!("{what}: not served by this process"),
                code => format!("{what}: {code:?}: {}", s.message()),
            })?;
        Ok::<_, BoxError>(answer.into_inner().status())
    };
    match tokio::time::timeout(Duration::from_secs_f64(args.timeout), ask).await {
        Err(_) => Err(format!("{what}: no answer within {} s", args.timeout).into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(ServingStatus::Serving)) => {
            println!("{what}: serving");
            Ok(())
        }
        Ok(Ok(status)) => Err(format!("{what}: {}", status.as_str_name()).into()),
    }
}

/// A positive, finite number of seconds.
fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() && v < 86_400.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0 and 86400"
        )),
    }
}
