//! The production server: any set of Threshold's services on one port, over
//! the embedded log or Kafka, behind the layers every call passes (a span
//! per call, RPC metrics, credentials, flow-control windows).
//!
//! # Layout
//!
//! - [`Config`] and [`Placement`]: where the data and the log are, which
//!   [`Services`] run, on which clock, with which fleets.
//! - [`Node::open`] opens the log, the credentials and the vault (refusing
//!   an unused vault over a log that holds sealed data: `vault_check`) and
//!   builds the services; its handles ([`Node::log`], [`Node::access`],
//!   [`Node::vault`]) are there before it serves, for tests and tools.
//! - [`Node::serve`] serves on a listener until a stop future resolves,
//!   then closes the log.
//! - [`bind`], [`fleets`] and [`shutdown`]: what a command needs around it.
//! - [`Tls`] and [`exposure`]: the certificate a node serves TLS with, and
//!   the rule that only loopback may be served without it.
//!
//! The `threshold` command parses its flags into a [`Config`]; test
//! sandboxes build one directly. Nothing here parses a command line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use threshold_access_service::{Access, Clock};
use threshold_analytics_service::Analytics;
use threshold_api::v1::access_service_server::AccessServiceServer;
use threshold_api::v1::analytics_service_server::AnalyticsServiceServer;
use threshold_api::v1::handheld_service_server::HandheldServiceServer;
use threshold_api::v1::manifest_service_server::ManifestServiceServer;
use threshold_api::v1::outcome_service_server::OutcomeServiceServer;
use threshold_api::v1::planning_service_server::PlanningServiceServer;
use threshold_handheld_service::{Handhelds, Limits};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, KafkaLog, KafkaOptions, Metered};
use threshold_manifest_service::{LoadLimits, Manifests};
use threshold_outcome_service::Outcomes;
use threshold_planning_service::Planning;
use threshold_privacy::Vault;
use threshold_routing::depot::Fleets;
use threshold_webhook_service::Webhooks;
use threshold_webhook_service::service::Service as WebhookApi;
use tokio::net::TcpListener;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};

mod credentials;
mod oversized;

mod vault_check;
mod vault_store;

pub use credentials::{KafkaCredentials, credential_store, credentials_topic};
pub use vault_check::SealedUnderAnotherVault;
pub use vault_store::{KafkaVault, vault_topic};

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

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A non-loopback address, without TLS and without being told that
    /// plaintext is meant.
    #[error(
        "refusing to listen on {addr} without TLS: anyone on its network could read and \
         replay credentials; give --tls-cert PEM and --tls-key PEM, or --insecure to serve \
         plaintext there anyway (e.g. behind a TLS-terminating proxy)"
    )]
    Plaintext {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// The TLS certificate or key was refused.
    #[error("TLS: the certificate or key is not usable: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The log could not be opened, read or closed.
    #[error(transparent)]
    Log(#[from] threshold_log::Error),
    /// The credentials could not be made or read.
    #[error(transparent)]
    Auth(#[from] threshold_auth::Error),
    /// The personal-data vault could not be opened.
    #[error(transparent)]
    Vault(#[from] threshold_privacy::Error),
    /// The vault is unused while the log holds data sealed under another.
    #[error(transparent)]
    VaultMismatch(#[from] SealedUnderAnotherVault),
    /// The fleet configuration is not valid.
    #[error(transparent)]
    Fleets(#[from] threshold_routing::Error),
    /// The track-and-trace store could not be opened.
    #[error("track and trace: {0}")]
    Track(#[from] threshold_projections::track::StoreError),
    /// A track-and-trace store this build cannot open.
    #[error("track and trace: {0}")]
    TrackTarget(String),
    /// The webhook registry could not be opened.
    #[error("webhooks: {0}")]
    Webhooks(#[from] threshold_webhook_service::Error),
    /// On Kafka, a webhook registry whose positions were counted on a log
    /// this process no longer has: its endpoints would resume at the wrong
    /// events.
    #[error(
        "webhooks: {registry} holds delivery positions, but the replica they count on \
         ({replica}) is not there; positions are each replica's own, so the registry only \
         works beside the replica it was kept with. Run `webhooks` with the --data it ran \
         with before, or move the registry away to start its endpoints afresh"
    )]
    WebhooksWithoutReplica {
        /// The registry.
        registry: PathBuf,
        /// The replica it needs.
        replica: PathBuf,
    },
    /// A fleet configuration file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The reflection service could not be built.
    #[error(transparent)]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The API's descriptor set, which names the methods metrics label, did
    /// not decode.
    #[error("the API's descriptor set does not decode: {0}")]
    Descriptors(#[from] prost::DecodeError),
    /// The listener's address or the transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The gRPC server failed.
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
}

/// The RPC metrics of the API's services, health checks and reflection; any
/// other path is counted as unknown.
fn rpc_metrics() -> Result<threshold_telemetry::RpcMetricsLayer> {
    use threshold_api::v1::{
        access_service_server::AccessServiceServer,
        analytics_service_server::AnalyticsServiceServer,
        handheld_service_server::HandheldServiceServer,
        manifest_service_server::ManifestServiceServer,
        outcome_service_server::OutcomeServiceServer,
        planning_service_server::PlanningServiceServer,
        webhook_service_server::WebhookServiceServer,
    };
    use tonic::server::NamedService;
    Ok(threshold_telemetry::RpcMetricsLayer::for_services(
        threshold_api::FILE_DESCRIPTOR_SET,
        &[
            <ManifestServiceServer<Manifests> as NamedService>::NAME,
            <HandheldServiceServer<Handhelds> as NamedService>::NAME,
            <AnalyticsServiceServer<Analytics> as NamedService>::NAME,
            <OutcomeServiceServer<Outcomes> as NamedService>::NAME,
            <AccessServiceServer<Access> as NamedService>::NAME,
            <PlanningServiceServer<Planning> as NamedService>::NAME,
            <WebhookServiceServer<WebhookApi> as NamedService>::NAME,
        ],
        &[
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ],
    )?)
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where the log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogSpec {
    /// The embedded store in the data directory.
    Embedded,
    /// Kafka, at these brokers (`host:port[,host:port…]`).
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

/// One service a server can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
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
    /// Partners' webhooks: the registry (`WebhookService`) and the
    /// deliveries. On the embedded log they also run wherever `outcomes`
    /// does; on Kafka only here, in exactly one process, whose `--data`
    /// holds the registry.
    Webhooks,
}

impl Service {
    /// Every value, as flags spell them.
    pub const NAMES: [(&'static str, Service); 8] = [
        ("all", Service::All),
        ("manifest", Service::Manifest),
        ("attempts", Service::Attempts),
        ("access", Service::Access),
        ("planning", Service::Planning),
        ("analytics", Service::Analytics),
        ("outcomes", Service::Outcomes),
        ("webhooks", Service::Webhooks),
    ];
}

impl std::str::FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Service::NAMES
            .iter()
            .find(|(name, _)| *name == s)
            .map(|(_, service)| *service)
            .ok_or_else(|| {
                let names: Vec<&str> = Service::NAMES.iter().map(|(n, _)| *n).collect();
                format!("no service {s:?}: one of {}", names.join(", "))
            })
    }
}

/// Which services a process runs.
#[derive(Debug, Clone)]
pub struct Services(Vec<Service>);

impl Services {
    /// Every service.
    pub fn all() -> Self {
        Self(vec![Service::All])
    }

    /// These services only.
    pub fn only(services: impl IntoIterator<Item = Service>) -> Self {
        Self(services.into_iter().collect())
    }

    /// Whether `s` runs.
    pub fn runs(&self, s: Service) -> bool {
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

/// The webhook registry's file in the data directory.
pub const WEBHOOKS_FILE: &str = "webhooks.sqlite";

/// The bundled fleet configuration of the sample depots.
const BUNDLED_DEPOTS: &str = include_str!("../../../config/depots.json");

/// The fleets to plan with: `file`, else `data/depots.json`, else the bundled ones.
pub fn fleets(file: Option<&Path>, data: &Path) -> Result<Fleets> {
    let in_data = data.join("depots.json");
    let file = file
        .map(Path::to_path_buf)
        .or_else(|| in_data.exists().then_some(in_data));
    Ok(match file {
        Some(f) => {
            let json = std::fs::read_to_string(&f).map_err(|source| Error::Read {
                path: f.clone(),
                source,
            })?;
            Fleets::from_json(&f.display().to_string(), &json)?
        }
        None => Fleets::from_json("config/depots.json (bundled)", BUNDLED_DEPOTS)?,
    })
}

/// Whether `addr` may be served: loopback always; any other address only
/// with TLS, or when `insecure` says plaintext is meant. A command checks
/// this before it binds, for every listener it opens.
pub fn exposure(addr: SocketAddr, tls: bool, insecure: bool) -> Result<()> {
    if addr.ip().is_loopback() || tls || insecure {
        Ok(())
    } else {
        Err(Error::Plaintext { addr })
    }
}

/// A certificate chain and its private key, PEM-encoded, for serving TLS.
#[derive(Clone)]
pub struct Tls {
    /// The certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// The private key of the leaf.
    pub key: Vec<u8>,
}

impl Tls {
    /// The certificate and key in these PEM files.
    pub fn read(cert: &Path, key: &Path) -> Result<Tls> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| Error::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Ok(Tls {
            cert: read(cert)?,
            key: read(key)?,
        })
    }
}

// By hand: the key is never printed.
impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &format_args!("{} bytes", self.cert.len()))
            .finish_non_exhaustive()
    }
}

/// Binds the port first, so a clash fails before any other work.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Listen { addr, source })
}

/// The connections `listener` accepts, each with `TCP_NODELAY` set (tonic
/// sets it only on listeners it binds itself). Without it, an answer
/// written while the connection's last one was not yet acknowledged by the
/// client waited for the client's delayed ACK, up to 40 ms: a handheld's
/// acknowledgements at 500 events/s had a p99 of 45 ms, and 5 ms with it.
fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Where the log is, which services run and under what name.
#[derive(Debug, Clone)]
pub struct Placement {
    /// The log.
    pub log: LogSpec,
    /// The services this process runs.
    pub services: Services,
    /// On Kafka, this process's name: its replica's consumer group and the
    /// `source` of what it writes.
    pub name: String,
    /// On Kafka, what topic names start with.
    pub topic_prefix: String,
    /// On Kafka, the partitions of a topic this process creates; `None`
    /// keeps the log's default.
    pub partitions: Option<i32>,
    /// On Kafka, how this process writes log records (it reads every layout).
    pub records: threshold_log::kafka::Layout,
    /// On Kafka, how long every follower of this process (the replica, the
    /// publishers, the credentials and vault tables) lets the broker hold
    /// an idle fetch, in milliseconds; `None` keeps each one's default
    /// ([`KafkaOptions::fetch_wait_ms`]).
    pub fetch_wait_ms: Option<u64>,
    /// The directory of the personal-data vault; `None` is the data directory.
    pub vault: Option<PathBuf>,
    /// The vault's key-encryption keys. On Kafka, the vault is then kept in
    /// the deployment's vault topic ([`KafkaVault`]); `None` keeps it in a
    /// directory (`vault`), for processes on one machine. On the embedded
    /// log, the vault's file keeps its secret and keys wrapped under them
    /// ([`threshold_privacy::SqliteStore::open_with`]).
    pub vault_keks: Option<threshold_privacy::Keks>,
    /// Where the track-and-trace model is kept where `outcomes` run: `None`
    /// for a SQLite file in the data directory ([`TRACK_FILE`]), or
    /// `scylla://HOST:PORT[,…]/KEYSPACE` (a build with the `scylla`
    /// feature).
    pub track: Option<String>,
}

impl Placement {
    /// The Kafka options of this process on `brokers`, its replica in
    /// `replica` (unused by a table): its name, topic prefix and fetch wait.
    fn kafka_options(&self, brokers: &str, replica: impl Into<PathBuf>) -> KafkaOptions {
        let mut options = KafkaOptions::new(brokers, replica, &self.name);
        options.topic_prefix = self.topic_prefix.clone();
        options.fetch_wait_ms = self.fetch_wait_ms;
        options
    }

    /// Every service, on the embedded log: one process, one machine.
    pub fn embedded() -> Self {
        Self {
            log: LogSpec::Embedded,
            services: Services::all(),
            name: "threshold".into(),
            topic_prefix: "threshold".into(),
            partitions: None,
            records: threshold_log::kafka::Layout::default(),
            fetch_wait_ms: None,
            vault: None,
            vault_keks: None,
            track: None,
        }
    }
}

/// The track-and-trace model's file in the data directory, unless a
/// cluster keeps it.
pub const TRACK_FILE: &str = "track.sqlite";

/// Opens the track-and-trace store `placement` names, or the file in `data`.
async fn open_track(
    placement: &Placement,
    data: &Path,
) -> Result<Arc<dyn threshold_projections::track::TrackStore>> {
    match placement.track.as_deref() {
        None => Ok(Arc::new(threshold_projections::SqliteTrackStore::open(
            &data.join(TRACK_FILE),
        )?)),
        Some(target) => open_track_target(target).await,
    }
}

#[cfg(feature = "scylla")]
async fn open_track_target(
    target: &str,
) -> Result<Arc<dyn threshold_projections::track::TrackStore>> {
    use threshold_projections::track::{ScyllaTarget, ScyllaTrackStore};
    let target: ScyllaTarget = target.parse().map_err(Error::TrackTarget)?;
    Ok(Arc::new(ScyllaTrackStore::connect(&target).await?))
}

#[cfg(not(feature = "scylla"))]
async fn open_track_target(
    target: &str,
) -> Result<Arc<dyn threshold_projections::track::TrackStore>> {
    Err(Error::TrackTarget(format!(
        "{target:?}: this build keeps track and trace only in the data directory; \
         build threshold with `--features scylla` for a ScyllaDB cluster"
    )))
}

/// Everything a server is opened with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory: the embedded log (or, on Kafka, this process's
    /// replica of it), credentials, by default the vault, and the webhook
    /// registry where webhooks run.
    pub data: PathBuf,
    /// The clock grant windows are decided on, and handhelds' event times
    /// bounded by.
    pub clock: Clock,
    /// The depots' fleets, for planning.
    pub fleets: Fleets,
    /// Where the log is and which services run.
    pub placement: Placement,
    /// How fast one handheld stream may send.
    pub handheld_limits: Limits,
    /// Serve TLS with this certificate; `None` serves plaintext (see
    /// [`exposure`] for where that is allowed).
    pub tls: Option<Tls>,
    /// What manifest loads may cost: their idle timeout and how many run.
    pub manifest_limits: LoadLimits,
    /// How partners' webhooks are delivered: where endpoints may point,
    /// the request timeout, the retry schedule.
    pub webhooks: threshold_webhook_service::Options,
}

impl Config {
    /// Every service on the embedded log in `data`, on the system clock,
    /// with `fleets`.
    pub fn embedded(data: impl Into<PathBuf>, fleets: Fleets) -> Self {
        Self {
            data: data.into(),
            clock: Clock::System,
            fleets,
            placement: Placement::embedded(),
            handheld_limits: Limits::default(),
            tls: None,
            manifest_limits: LoadLimits::default(),
            webhooks: threshold_webhook_service::Options::default(),
        }
    }
}

/// The opened log, to close on the way out.
enum Opened {
    Embedded(EmbeddedLog),
    Kafka(KafkaLog),
}

impl Opened {
    /// Closes the log of a start that failed after opening it.
    async fn close(self) -> Result<()> {
        match self {
            Opened::Embedded(log) => log.close().await?,
            Opened::Kafka(log) => log.close().await?,
        }
        Ok(())
    }
}

/// An opened server: its log, credentials, vault and services, not yet
/// serving.
pub struct Node {
    config: Config,
    opened: Opened,
    log: Arc<dyn EventLog>,
    vault: Arc<Vault>,
    auth: threshold_auth::AuthLayer,
    authenticator: threshold_auth::Authenticator,
    made_local_tokens: bool,
    manifests: Option<Manifests>,
    handhelds: Option<Handhelds>,
    analytics: Option<Analytics>,
    outcomes: Option<Outcomes>,
    access: Option<Access>,
    planning: Option<Planning>,
    publisher: Option<tokio::task::JoinHandle<()>>,
    /// Feeds the track-and-trace store.
    tracker: Option<tokio::task::JoinHandle<()>>,
    /// The track-and-trace store, where outcomes run.
    track: Option<Arc<dyn threshold_projections::track::TrackStore>>,
    webhooks: Option<Arc<Webhooks>>,
}

impl Node {
    /// Opens the log, the credentials (an empty data directory gets local
    /// ones for every role) and the vault, and starts the services of the
    /// placement; nothing is served until [`Node::serve`].
    pub async fn open(config: Config) -> Result<Node> {
        let data = config.data.as_path();
        let placement = &config.placement;
        let services = &placement.services;
        // The log, the vault and the credentials: the owner's alone.
        threshold_auth::ensure_private_dir(data)?;
        let (log, opened): (Arc<dyn EventLog>, Opened) = match &placement.log {
            LogSpec::Embedded => {
                let log = EmbeddedLog::open(data, EmbeddedOptions::default())?;
                (Arc::new(log.clone()), Opened::Embedded(log))
            }
            LogSpec::Kafka(brokers) => {
                // Webhook positions are positions of this process's
                // replica: a registry is refused without the replica it
                // was kept with (a new one numbers the events anew).
                let (registry, replica) = (data.join(WEBHOOKS_FILE), data.join("replica"));
                if services.runs(Service::Webhooks) && registry.exists() && !replica.exists() {
                    return Err(Error::WebhooksWithoutReplica { registry, replica });
                }
                let mut options = placement.kafka_options(brokers, replica);
                if let Some(partitions) = placement.partitions {
                    options.partitions = partitions;
                }
                options.layout = placement.records;
                let log = KafkaLog::open(options).await?;
                (Arc::new(log.clone()), Opened::Kafka(log))
            }
        };
        // Every call carries a credential. On the embedded log an empty data
        // directory gets working local ones, so the CLI and `make run` need
        // no manual step; on Kafka the deployment's credentials are its
        // topic's, shared by every process, and made by the operator.
        let (authenticator, made_local_tokens) = match &placement.log {
            LogSpec::Embedded => (
                threshold_auth::Authenticator::new(data),
                threshold_auth::LocalTokens::ensure(data)?,
            ),
            LogSpec::Kafka(brokers) => {
                let store = match KafkaCredentials::open_with(&placement.kafka_options(brokers, ""))
                    .await
                {
                    Ok(store) => store,
                    Err(e) => {
                        opened.close().await?;
                        return Err(e.into());
                    }
                };
                if data.join(threshold_auth::CREDENTIALS_FILE).exists() {
                    tracing::warn!(
                        file = %data.join(threshold_auth::CREDENTIALS_FILE).display(),
                        "not read on Kafka: the deployment's credentials are in its credentials topic"
                    );
                }
                (
                    threshold_auth::Authenticator::with_store(Arc::new(store)),
                    false,
                )
            }
        };
        let auth = threshold_auth::AuthLayer::new(authenticator.clone());

        let shared: Arc<dyn EventLog> = Arc::new(Metered::new(log));
        // Personal data is sealed under per-subject keys kept here, apart from
        // the log; `threshold privacy forget` destroys them.
        // An unused vault over a log holding sealed data is refused, and the
        // log closed again, so that the data directory is free at once.
        // On Kafka with a key-encryption key, the vault is the deployment's
        // topic, shared by every process without a shared disk.
        let vault_dir = placement.vault.as_deref().unwrap_or(data);
        let vault = match (&placement.log, &placement.vault_keks) {
            (LogSpec::Kafka(brokers), Some(keks)) => {
                match KafkaVault::open_with(&placement.kafka_options(brokers, ""), keks.clone())
                    .await
                {
                    Ok(store) => {
                        let vault = Vault::with_store(store);
                        vault_check::check(&vault, &*shared).await.map(|()| vault)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            (LogSpec::Embedded, keks) => vault_check::open(vault_dir, keks.clone(), &*shared).await,
            (LogSpec::Kafka(_), None) => vault_check::open(vault_dir, None, &*shared).await,
        };
        let vault = match vault {
            Ok(vault) => Arc::new(vault),
            Err(e) => {
                drop(shared);
                opened.close().await?;
                return Err(e);
            }
        };
        let manifests = services.runs(Service::Manifest).then(|| {
            Manifests::new(Arc::clone(&shared), Arc::clone(&vault))
                .with_limits(config.manifest_limits)
                // A simulation's loads are stamped on its clock.
                .with_clock(config.clock)
        });
        let handhelds = services.runs(Service::Attempts).then(|| {
            Handhelds::new(Arc::clone(&shared))
                .with_limits(config.handheld_limits)
                .with_vault(Arc::clone(&vault))
                // A simulation's handhelds report on its clock too.
                .with_clock(config.clock)
        });
        let analytics = services
            .runs(Service::Analytics)
            .then(|| Analytics::start(Arc::clone(&shared)));
        // Where outcomes run, so does track and trace: this process keeps
        // its store fed from the log, as the reader of its own name.
        let (outcomes, tracker, track) = if services.runs(Service::Outcomes) {
            let store = match open_track(placement, data).await {
                Ok(store) => store,
                Err(e) => {
                    drop(shared);
                    opened.close().await?;
                    return Err(e);
                }
            };
            let tracker = tokio::spawn({
                let (log, store, name) = (
                    Arc::clone(&shared),
                    Arc::clone(&store),
                    placement.name.clone(),
                );
                async move {
                    if let Some(e) = threshold_projections::track::follow(log, store, name).await {
                        tracing::error!(error = %e, "track and trace stopped following the log");
                    }
                }
            });
            let outcomes = Outcomes::new(Arc::clone(&shared))
                .with_vault(Arc::clone(&vault))
                .with_track(Arc::clone(&store));
            (Some(outcomes), Some(tracker), Some(store))
        } else {
            (None, None, None)
        };
        // On Kafka, the outcome processes also publish partners' outcomes to
        // the outcome topic, sharing the work as one consumer group.
        let publisher = match (&opened, services.runs(Service::Outcomes)) {
            (Opened::Kafka(log), true) => Some(publish_outcomes(log)?),
            _ => None,
        };
        // Webhooks have one registry, a file in this process's data
        // directory, so one process delivers. On the embedded log that is
        // the one process, which runs them with the outcomes (or when
        // asked); on Kafka, the one process asked for `webhooks`.
        let runs_webhooks = match &opened {
            Opened::Embedded(_) => {
                services.runs(Service::Outcomes) || services.runs(Service::Webhooks)
            }
            Opened::Kafka(_) => services.runs(Service::Webhooks),
        };
        let webhooks = if runs_webhooks {
            // Signing secrets are sealed with the vault, so the
            // registry's file alone hands out no key.
            let hooks = Webhooks::open_sealed(
                Arc::clone(&shared),
                data.join(WEBHOOKS_FILE),
                config.webhooks.clone(),
                Some(Arc::clone(&vault)),
            )?
            .with_credentials(Arc::clone(authenticator.store()));
            hooks.start().await?;
            Some(Arc::new(hooks))
        } else {
            None
        };
        let planning = services.runs(Service::Planning).then(|| {
            Planning::new(
                Arc::clone(&shared),
                config.fleets.clone(),
                Arc::clone(&vault),
            )
            // A simulation's plans are stamped on its clock.
            .with_clock(config.clock)
        });
        let clock = config.clock;
        let access = services.runs(Service::Access).then(|| {
            let access = Access::new(Arc::clone(&shared))
                .with_clock(clock)
                .with_vault(Arc::clone(&vault));
            // Doors left unlocked and cameras gone silent are looked for every
            // second, on the server's own clock.
            if clock == Clock::System {
                access.spawn_watcher(std::time::Duration::from_secs(1));
            }
            access
        });
        Ok(Node {
            config,
            opened,
            log: shared,
            vault,
            auth,
            authenticator,
            made_local_tokens,
            manifests,
            handhelds,
            analytics,
            outcomes,
            access,
            planning,
            publisher,
            tracker,
            track,
            webhooks,
        })
    }

    /// The log the services write and read, metered as theirs is.
    pub fn log(&self) -> Arc<dyn EventLog> {
        Arc::clone(&self.log)
    }

    /// The access service, when this node runs it.
    pub fn access(&self) -> Option<Access> {
        self.access.clone()
    }

    /// The handheld service, when this node runs it.
    pub fn handhelds(&self) -> Option<Handhelds> {
        self.handhelds.clone()
    }

    /// The track-and-trace store this node feeds, when it runs outcomes.
    pub fn track(&self) -> Option<Arc<dyn threshold_projections::track::TrackStore>> {
        self.track.clone()
    }

    /// The outcome service, when this node runs it.
    pub fn outcomes(&self) -> Option<Outcomes> {
        self.outcomes.clone()
    }

    /// Partners' webhooks, when this node delivers them.
    pub fn webhooks(&self) -> Option<Arc<Webhooks>> {
        self.webhooks.clone()
    }

    /// The manifest service, when this node runs it.
    pub fn manifests(&self) -> Option<Manifests> {
        self.manifests.clone()
    }

    /// The planning service, when this node runs it.
    pub fn planning(&self) -> Option<Planning> {
        self.planning.clone()
    }

    /// Who its calls are checked against: the same credentials its gRPC
    /// services use, for other front doors (the web console).
    pub fn authenticator(&self) -> threshold_auth::Authenticator {
        self.authenticator.clone()
    }

    /// The personal-data vault the services seal with.
    pub fn vault(&self) -> Arc<Vault> {
        Arc::clone(&self.vault)
    }

    /// The data directory.
    pub fn data(&self) -> &Path {
        &self.config.data
    }

    /// Serves on `listener` until `stop` resolves, then closes the log.
    /// The first line printed names the address.
    pub async fn serve(self, listener: TcpListener, stop: impl Future<Output = ()>) -> Result<()> {
        let addr = listener.local_addr()?;
        let config = &self.config;
        let data = config.data.as_path();
        let placement = &config.placement;
        let clock = config.clock;

        let (health, health_service) = tonic_health::server::health_reporter();
        if self.manifests.is_some() {
            health
                .set_serving::<ManifestServiceServer<Manifests>>()
                .await;
        }
        if self.handhelds.is_some() {
            health
                .set_serving::<HandheldServiceServer<Handhelds>>()
                .await;
        }
        if self.analytics.is_some() {
            health
                .set_serving::<AnalyticsServiceServer<Analytics>>()
                .await;
        }
        if self.outcomes.is_some() {
            health.set_serving::<OutcomeServiceServer<Outcomes>>().await;
        }
        if self.access.is_some() {
            health.set_serving::<AccessServiceServer<Access>>().await;
        }
        if self.webhooks.is_some() {
            health
                .set_serving::<threshold_api::v1::webhook_service_server::WebhookServiceServer<WebhookApi>>()
                .await;
        }
        if self.planning.is_some() {
            health
                .set_serving::<PlanningServiceServer<Planning>>()
                .await;
        }

        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(threshold_api::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;

        // A certificate that does not load fails here, before the address
        // is announced.
        let mut server = Server::builder();
        if let Some(tls) = &config.tls {
            server = server
                .tls_config(
                    ServerTlsConfig::new().identity(Identity::from_pem(&tls.cert, &tls.key)),
                )
                .map_err(Error::Tls)?;
        }
        let on = match &placement.log {
            LogSpec::Embedded => "the embedded log".to_owned(),
            LogSpec::Kafka(brokers) => format!("Kafka at {brokers} as {}", placement.name),
        };
        let transport = if config.tls.is_some() {
            "TLS"
        } else {
            "plaintext"
        };
        println!(
            "threshold serving on {addr} ({transport}; data {}; services {}; {on})",
            data.display(),
            placement.services.names()
        );
        if let LogSpec::Kafka(_) = placement.log {
            let store = self.authenticator.store();
            match store.current() {
                Ok(c) if c.principals().is_empty() => println!(
                    "credentials: none yet in {}; make them with `threshold credentials add --log kafka://…`",
                    store.describe()
                ),
                Ok(c) => println!(
                    "credentials: {} in {}",
                    c.principals().len(),
                    store.describe()
                ),
                Err(e) => println!("credentials: {}: {e}", store.describe()),
            }
        }
        if self.made_local_tokens {
            println!(
                "credentials: local tokens for every role written to {} (owner-only); \
                 the CLI finds them with --data {}",
                data.join(threshold_auth::LOCAL_TOKENS_FILE).display(),
                data.display()
            );
        }
        tracing::info!(%addr, tls = config.tls.is_some(), data = %data.display(), simulation = clock == Clock::Simulated, "serving");
        if clock == Clock::Simulated {
            println!("simulation: grant windows follow the simulator's clock, not this server's");
        }
        server
            // A span per call, continuing the caller's trace.
            .trace_fn(threshold_telemetry::server_span)
            // Only paths the server serves get series of their own: any
            // caller, authenticated or not, can make up paths.
            .layer(rpc_metrics()?)
            // No credential, no call (health checks and reflection excepted).
            .layer(self.auth)
            // A request over its size limit is RESOURCE_EXHAUSTED, as gRPC
            // says, for unary calls too.
            .layer(oversized::OversizedLayer)
            // One client cannot open unbounded streams on one connection.
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .add_service(health_service)
            .add_service(reflection)
            .add_optional_service(self.manifests.map(Manifests::into_server))
            .add_optional_service(self.handhelds.map(Handhelds::into_server))
            .add_optional_service(self.analytics.map(Analytics::into_server))
            .add_optional_service(self.outcomes.map(Outcomes::into_server))
            .add_optional_service(self.access.map(Access::into_server))
            .add_optional_service(self.planning.map(Planning::into_server))
            .add_optional_service(
                self.webhooks
                    .clone()
                    .map(|h| WebhookApi::new(h).into_server()),
            )
            .serve_with_incoming_shutdown(incoming(listener), stop)
            .await?;
        if let Some(publisher) = self.publisher {
            publisher.abort();
        }
        if let Some(tracker) = self.tracker {
            tracker.abort();
        }
        if let Some(hooks) = &self.webhooks {
            // Each endpoint resumes from its durable position at the next start.
            hooks.stop().await;
        }
        match self.opened {
            Opened::Embedded(log) => {
                log.close().await?;
                println!("threshold stopped; every acknowledged event is on disk");
            }
            Opened::Kafka(log) => {
                log.close().await?;
                println!("threshold stopped; every acknowledged event is in Kafka");
            }
        }
        Ok(())
    }
}

/// Publishes every parcel outcome, as a partner sees it, to that partner's
/// own outcome topic (`threshold.outcome.<partner>`; a parcel of no partner
/// is published nowhere): type `threshold.v1.outcome.<kind>`, key the
/// parcel's stream, the value a `ParcelOutcome` whose cursor is 0 (on the
/// topic, the Kafka offset is the cursor).
fn publish_outcomes(log: &KafkaLog) -> Result<tokio::task::JoinHandle<()>, threshold_log::Error> {
    use prost::Message as _;
    use threshold_api::v1::parcel_outcome::Kind;
    let topics = log.options().clone();
    log.publish(
        &format!("{}.outcome-publisher", topics.topic_prefix),
        threshold_domain::Category::Parcel,
        move |event| {
            let partner = event.event.tenant.as_deref()?;
            Some(topics.outcome_topic_of(partner))
        },
        threshold_outcome_service::OUTCOME_TYPES,
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
pub async fn shutdown() {
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

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};
    use tokio_stream::StreamExt as _;

    #[tokio::test]
    async fn accepted_connections_send_at_once_without_nagles_algorithm() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut incoming = super::incoming(listener);
        let _client = TcpStream::connect(addr).await.expect("connect");
        let accepted = incoming
            .next()
            .await
            .expect("a connection")
            .expect("accepted");
        assert!(
            accepted.nodelay().expect("TCP_NODELAY"),
            "an accepted connection still waits to send small answers together"
        );
    }
}
