//! `threshold serve`: the services on one port, over the embedded log or
//! Kafka. Every service by default; `--services` picks some, so a carrier
//! on Kafka runs each in its own process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use threshold_access_service::{Access, Clock};
use threshold_analytics_service::Analytics;
use threshold_handheld_service::Handhelds;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, KafkaLog, KafkaOptions, Metered};
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
    /// The data directory: the embedded log (or, on Kafka, this process's
    /// replica of it), credentials and the personal-data vault.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The log: `embedded` (in --data), or `kafka://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, default_value = "embedded")]
    log: LogSpec,
    /// The services to run, comma-separated: manifest, attempts, access,
    /// planning, analytics, outcomes; default all.
    #[arg(long, value_delimiter = ',', default_value = "all")]
    services: Vec<Service>,
    /// On Kafka, this process's name: its replica's consumer group and the
    /// `ce_source` of what it writes. One name per process.
    #[arg(long, default_value = "threshold")]
    name: String,
    /// On Kafka, what topic names start with: `threshold` gives
    /// `threshold.parcel`, … One prefix per deployment sharing a cluster.
    #[arg(long, default_value = "threshold")]
    topic_prefix: String,
    /// The directory of the personal-data vault; default --data. Processes
    /// on one machine share it by naming the same directory.
    #[arg(long)]
    vault: Option<PathBuf>,
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

/// Where the log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LogSpec {
    /// The embedded store in the data directory.
    Embedded,
    /// Kafka, at these brokers.
    Kafka(String),
}

impl std::str::FromStr for LogSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "embedded" {
            return Ok(LogSpec::Embedded);
        }
        threshold_log::kafka::brokers_from_url(s)
            .map(LogSpec::Kafka)
            .map_err(|e| format!("{e} (or `embedded`)"))
    }
}

/// One service `threshold serve` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Service {
    /// Every service.
    All,
    /// Manifest loading.
    Manifest,
    /// Handhelds' attempt events and routes.
    Attempts,
    /// Grants, unlocks, locks and cameras.
    Access,
    /// Route planning.
    Planning,
    /// Analysts' reports.
    Analytics,
    /// Partners' outcome subscriptions.
    Outcomes,
}

/// Which services a process runs.
#[derive(Debug, Clone)]
pub(crate) struct Services(Vec<Service>);

impl Services {
    /// Every service.
    pub(crate) fn all() -> Self {
        Self(vec![Service::All])
    }

    fn runs(&self, s: Service) -> bool {
        self.0.iter().any(|x| *x == s || *x == Service::All)
    }

    fn names(&self) -> String {
        if self.runs(Service::All) {
            return "all".into();
        }
        self.0
            .iter()
            .map(|s| format!("{s:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(",")
    }
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
    let placement = Placement {
        log: args.log,
        services: Services(args.services),
        name: args.name,
        topic_prefix: args.topic_prefix,
        vault: args.vault,
    };
    let served = serve(listener, &args.data, clock, fleets, placement, shutdown()).await;
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

/// Where the log is, which services run and under what name.
#[derive(Debug, Clone)]
pub(crate) struct Placement {
    pub(crate) log: LogSpec,
    pub(crate) services: Services,
    pub(crate) name: String,
    pub(crate) topic_prefix: String,
    pub(crate) vault: Option<PathBuf>,
}

impl Placement {
    /// Every service, on the embedded log: one process, one machine.
    pub(crate) fn embedded() -> Self {
        Self {
            log: LogSpec::Embedded,
            services: Services::all(),
            name: "threshold".into(),
            topic_prefix: "threshold".into(),
            vault: None,
        }
    }
}

/// The opened log, to close on the way out.
enum Opened {
    Embedded(EmbeddedLog),
    Kafka(KafkaLog),
}

/// Serves the services of `placement` on `listener` over its log, with
/// grant windows decided on `clock`, until `stop` resolves, then closes the
/// log.
pub(crate) async fn serve(
    listener: TcpListener,
    data: &std::path::Path,
    clock: Clock,
    fleets: Fleets,
    placement: Placement,
    stop: impl Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = listener.local_addr()?;
    let services = &placement.services;
    let (log, opened): (Arc<dyn EventLog>, Opened) = match &placement.log {
        LogSpec::Embedded => {
            let log = EmbeddedLog::open(data, EmbeddedOptions::default())?;
            (Arc::new(log.clone()), Opened::Embedded(log))
        }
        LogSpec::Kafka(brokers) => {
            let mut options = KafkaOptions::new(brokers, data.join("replica"), &placement.name);
            options.topic_prefix = placement.topic_prefix.clone();
            let log = KafkaLog::open(options).await?;
            (Arc::new(log.clone()), Opened::Kafka(log))
        }
    };
    // Every call carries a credential; an empty data directory gets working
    // local ones, so the CLI and `make run` need no manual step.
    let made_local_tokens = threshold_auth::LocalTokens::ensure(data)?;
    let auth = threshold_auth::AuthLayer::new(threshold_auth::Authenticator::new(data));

    let (health, health_service) = tonic_health::server::health_reporter();
    let shared: Arc<dyn EventLog> = Arc::new(Metered::new(log));
    // Personal data is sealed under per-subject keys kept here, apart from
    // the log; `threshold privacy forget` destroys them.
    let vault = Arc::new(threshold_privacy::Vault::open(
        placement.vault.as_deref().unwrap_or(data),
    )?);
    let manifests = services
        .runs(Service::Manifest)
        .then(|| Manifests::new(Arc::clone(&shared), Arc::clone(&vault)).into_server());
    let handhelds = services.runs(Service::Attempts).then(|| {
        Handhelds::new(Arc::clone(&shared))
            .with_vault(Arc::clone(&vault))
            .into_server()
    });
    let analytics = services
        .runs(Service::Analytics)
        .then(|| Analytics::start(Arc::clone(&shared)).into_server());
    let outcomes = services
        .runs(Service::Outcomes)
        .then(|| Outcomes::new(Arc::clone(&shared)).into_server());
    // On Kafka, the outcome processes also publish partners' outcomes to
    // the outcome topic, sharing the work as one consumer group.
    let publisher = match (&opened, services.runs(Service::Outcomes)) {
        (Opened::Kafka(log), true) => Some(publish_outcomes(log)?),
        _ => None,
    };
    let planning = services
        .runs(Service::Planning)
        .then(|| Planning::new(Arc::clone(&shared), fleets, Arc::clone(&vault)).into_server());
    let access = services.runs(Service::Access).then(|| {
        let access = Access::new(Arc::clone(&shared))
            .with_clock(clock)
            .with_vault(Arc::clone(&vault));
        // Doors left unlocked and cameras gone silent are looked for every
        // second, on the server's own clock.
        if clock == Clock::System {
            access.spawn_watcher(std::time::Duration::from_secs(1));
        }
        access.into_server()
    });
    if manifests.is_some() {
        health
            .set_serving::<threshold_api::v1::manifest_service_server::ManifestServiceServer<Manifests>>()
            .await;
    }
    if handhelds.is_some() {
        health
            .set_serving::<threshold_api::v1::handheld_service_server::HandheldServiceServer<Handhelds>>()
            .await;
    }
    if analytics.is_some() {
        health
            .set_serving::<threshold_api::v1::analytics_service_server::AnalyticsServiceServer<Analytics>>()
            .await;
    }
    if outcomes.is_some() {
        health
            .set_serving::<threshold_api::v1::outcome_service_server::OutcomeServiceServer<Outcomes>>()
            .await;
    }
    if access.is_some() {
        health
            .set_serving::<threshold_api::v1::access_service_server::AccessServiceServer<Access>>()
            .await;
    }
    if planning.is_some() {
        health
            .set_serving::<threshold_api::v1::planning_service_server::PlanningServiceServer<Planning>>()
            .await;
    }

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(threshold_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let on = match &placement.log {
        LogSpec::Embedded => "the embedded log".to_owned(),
        LogSpec::Kafka(brokers) => format!("Kafka at {brokers} as {}", placement.name),
    };
    println!(
        "threshold serving on {addr} (data {}; services {}; {on})",
        data.display(),
        services.names()
    );
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
        .add_optional_service(manifests)
        .add_optional_service(handhelds)
        .add_optional_service(analytics)
        .add_optional_service(outcomes)
        .add_optional_service(access)
        .add_optional_service(planning)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop)
        .await?;
    if let Some(publisher) = publisher {
        publisher.abort();
    }
    match opened {
        Opened::Embedded(log) => {
            log.close().await?;
            println!("threshold stopped; every acknowledged event is on disk");
        }
        Opened::Kafka(log) => {
            log.replica().close().await?;
            println!("threshold stopped; every acknowledged event is in Kafka");
        }
    }
    Ok(())
}

/// Publishes every parcel outcome, as a partner sees it, to the outcome
/// topic: type `threshold.v1.outcome.<kind>`, key the parcel's stream, the
/// value a `ParcelOutcome` whose cursor is 0 (on the topic, the Kafka offset
/// is the cursor).
fn publish_outcomes(log: &KafkaLog) -> Result<tokio::task::JoinHandle<()>, threshold_log::Error> {
    use prost::Message as _;
    use threshold_api::v1::parcel_outcome::Kind;
    let options = log.options();
    log.publish(
        &format!("{}.outcome-publisher", options.topic_prefix),
        threshold_domain::Category::Parcel,
        &options.outcome_topic(),
        |event| {
            let outcome = threshold_outcome_service::outcome(
                event,
                threshold_outcome_service::View::Partner,
            )?;
            let kind = match outcome.kind() {
                Kind::Delivered => "delivered",
                Kind::AttemptFailed => "attempt_failed",
                Kind::Returned => "returned",
                Kind::Unspecified => return None,
            };
            let outcome = threshold_api::v1::ParcelOutcome {
                cursor: 0,
                ..outcome
            };
            Some((format!("outcome.{kind}"), outcome.encode_to_vec()))
        },
    )
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
