//! `threshold serve`: every service on one port, over the embedded log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use threshold_access_service::{Access, Clock};
use threshold_analytics_service::Analytics;
use threshold_handheld_service::Handhelds;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, Metered};
use threshold_manifest_service::Manifests;
use threshold_outcome_service::Outcomes;
use threshold_planning_service::Planning;
use threshold_routing::depot::Fleets;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Server;

/// Concurrent gRPC streams one connection may have open.
const MAX_STREAMS_PER_CONNECTION: u32 = 256;
/// Bytes a client may send on one stream ahead of what the server has read.
const STREAM_WINDOW: u32 = 64 * 1024;
/// Bytes a client may send on one connection ahead of what the server has read.
///
/// HTTP/2 flow control counts bytes, but h2 also bounds the framing overhead
/// it buffers: each DATA frame under 256 bytes costs `256 - len` of a budget
/// of half the connection window, and a connection over budget is closed
/// with ENHANCE_YOUR_CALM. Handheld events are single ~150-byte frames, so a
/// server behind on reading must be able to buffer every stream's window of
/// them within that budget: 256 streams × 64 KiB = 16 MiB of ~155-byte frames
/// is ~11 MB of overhead, inside the 12 MiB budget of a 24 MiB window. Then
/// an overloaded server slows its clients down instead of dropping them. At
/// most 16 MiB of data (plus ~11 MB of framing) is buffered per connection.
const CONNECTION_WINDOW: u32 = 24 * 1024 * 1024;

/// Options of `threshold serve`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The data directory of the embedded log.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Where to listen for gRPC (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Serve a simulation: grant windows are decided on the simulator's
    /// clock, carried by each access request, instead of this server's.
    /// Never for real deliveries.
    #[arg(long)]
    simulation: bool,
    /// The depots' fleets (JSON, see config/depots.json); default
    /// DATA/depots.json when present, else the bundled configuration.
    #[arg(long)]
    depots: Option<PathBuf>,
    #[command(flatten)]
    telemetry: crate::admin::TelemetryArgs,
}

/// The bundled fleet configuration of the sample depots.
const BUNDLED_DEPOTS: &str = include_str!("../../../config/depots.json");

/// The fleets to plan with: `file`, else `data/depots.json`, else the bundled ones.
pub(crate) fn fleets(
    file: Option<&std::path::Path>,
    data: &std::path::Path,
) -> Result<Fleets, Box<dyn std::error::Error + Send + Sync>> {
    let in_data = data.join("depots.json");
    let file = file
        .map(std::path::Path::to_path_buf)
        .or_else(|| in_data.exists().then_some(in_data));
    Ok(match file {
        Some(f) => {
            let json = std::fs::read_to_string(&f)
                .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
            Fleets::from_json(&f.display().to_string(), &json)?
        }
        None => Fleets::from_json("config/depots.json (bundled)", BUNDLED_DEPOTS)?,
    })
}

pub(crate) async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let listener = bind(args.listen).await?;
    let clock = if args.simulation {
        Clock::Simulated
    } else {
        Clock::System
    };
    let fleets = fleets(args.depots.as_deref(), &args.data)?;
    let telemetry = crate::admin::start(&args.telemetry).await?;
    let served = serve(listener, &args.data, clock, fleets, shutdown()).await;
    telemetry.shutdown(std::time::Duration::from_secs(5));
    served
}

/// Binds the port first, so a clash fails before any other work.
pub(crate) async fn bind(
    addr: SocketAddr,
) -> Result<TcpListener, Box<dyn std::error::Error + Send + Sync>> {
    Ok(TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?)
}

/// Serves every service on `listener` over the store in `data`, with grant
/// windows decided on `clock`, until `stop` resolves, then closes the log.
pub(crate) async fn serve(
    listener: TcpListener,
    data: &std::path::Path,
    clock: Clock,
    fleets: Fleets,
    stop: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = listener.local_addr()?;
    let log = Arc::new(EmbeddedLog::open(data, EmbeddedOptions::default())?);
    // Every call carries a credential; an empty data directory gets working
    // local ones, so the CLI and `make run` need no manual step.
    let made_local_tokens = threshold_auth::LocalTokens::ensure(data)?;
    let auth = threshold_auth::AuthLayer::new(threshold_auth::Authenticator::new(data));

    let (health, health_service) = tonic_health::server::health_reporter();
    let shared: Arc<dyn EventLog> = Arc::new(Metered::new(log.clone()));
    // Personal data is sealed under per-subject keys kept here, apart from
    // the log; `threshold privacy forget` destroys them.
    let vault = Arc::new(threshold_privacy::Vault::open(data)?);
    let manifests = Manifests::new(Arc::clone(&shared), Arc::clone(&vault)).into_server();
    let handhelds = Handhelds::new(Arc::clone(&shared))
        .with_vault(Arc::clone(&vault))
        .into_server();
    let analytics = Analytics::start(Arc::clone(&shared)).into_server();
    let outcomes = Outcomes::new(Arc::clone(&shared)).into_server();
    let planning = Planning::new(Arc::clone(&shared), fleets, Arc::clone(&vault)).into_server();
    let access = Access::new(shared).with_clock(clock).with_vault(vault);
    // Doors left unlocked and cameras gone silent are looked for every
    // second, on the server's own clock.
    if clock == Clock::System {
        access.spawn_watcher(std::time::Duration::from_secs(1));
    }
    let access = access.into_server();
    health
        .set_serving::<threshold_api::v1::manifest_service_server::ManifestServiceServer<Manifests>>()
        .await;
    health
        .set_serving::<threshold_api::v1::handheld_service_server::HandheldServiceServer<Handhelds>>()
        .await;
    health
        .set_serving::<threshold_api::v1::analytics_service_server::AnalyticsServiceServer<Analytics>>()
        .await;
    health
        .set_serving::<threshold_api::v1::outcome_service_server::OutcomeServiceServer<Outcomes>>()
        .await;
    health
        .set_serving::<threshold_api::v1::access_service_server::AccessServiceServer<Access>>()
        .await;
    health
        .set_serving::<threshold_api::v1::planning_service_server::PlanningServiceServer<Planning>>(
        )
        .await;

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(threshold_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    println!("threshold serving on {addr} (data {})", data.display());
    if made_local_tokens {
        println!(
            "credentials: local tokens for every role written to {} (owner-only); \
             the CLI finds them with --data {}",
            data.join(threshold_auth::LOCAL_TOKENS_FILE).display(),
            data.display()
        );
    }
    tracing::info!(%addr, data = %data.display(), simulation = clock == Clock::Simulated, "serving");
    if clock == Clock::Simulated {
        println!("simulation: grant windows follow the simulator's clock, not this server's");
    }
    Server::builder()
        // A span per call, continuing the caller's trace.
        .trace_fn(threshold_telemetry::server_span)
        .layer(threshold_telemetry::RpcMetricsLayer::default())
        // No credential, no call (health checks and reflection excepted).
        .layer(auth)
        // One client cannot open unbounded streams on one connection.
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(manifests)
        .add_service(handhelds)
        .add_service(analytics)
        .add_service(outcomes)
        .add_service(access)
        .add_service(planning)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await?;
    log.close().await?;
    println!("threshold stopped; every acknowledged event is on disk");
    Ok(())
}

/// Resolves on the first Ctrl-C (or SIGTERM); a second Ctrl-C exits at once.
pub(crate) async fn shutdown() {
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    eprintln!("threshold: shutting down (Ctrl-C again to exit at once)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
}
