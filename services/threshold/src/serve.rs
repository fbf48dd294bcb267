//! `threshold serve`: the services on one port, over the embedded log or
//! Kafka. Every service by default; `--services` picks some, so a carrier
//! on Kafka runs each in its own process. The server itself is
//! `threshold-server`; this module only reads its flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use threshold_access_service::Clock;
use threshold_server::{Config, Node, Placement, Services};

/// Options of `threshold serve`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The data directory: the embedded log (or, on Kafka, this process's
    /// replica of it), credentials, the personal-data vault and the webhook
    /// registry.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The log: `embedded` (in --data), or `kafka://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, default_value = "embedded")]
    log: threshold_server::LogSpec,
    /// The services to run, comma-separated: manifest, attempts, access,
    /// planning, analytics, outcomes, webhooks; default all. On the
    /// embedded log webhooks also run with outcomes; on Kafka exactly one
    /// process runs `webhooks`, its registry in its --data.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "all",
        value_parser = clap::builder::PossibleValuesParser::new(
            threshold_server::Service::NAMES.map(|(name, _)| name)
        )
        .try_map(|s| s.parse::<threshold_server::Service>())
    )]
    services: Vec<threshold_server::Service>,
    /// On Kafka, this process's name: its replica's consumer group and the
    /// `source` of what it writes. One name per process.
    #[arg(long, default_value = "threshold")]
    name: String,
    /// On Kafka, what topic names start with: `threshold` gives
    /// `threshold.parcel`, … One prefix per deployment sharing a cluster.
    #[arg(long, default_value = "threshold")]
    topic_prefix: String,
    /// On Kafka, how this process writes log records: `append` (one record
    /// per append, a protobuf `LogAppend` of its events), or, for the first
    /// step of an upgrade from a build that wrote it and reads nothing newer
    /// (deploy/README.md), `logrecord` (one protobuf `LogRecord` per event)
    /// or `cloudevents` (one record per event, CloudEvents headers). Every
    /// process reads all three.
    #[arg(
        long,
        env = "THRESHOLD_KAFKA_RECORDS",
        default_value = "append",
        value_name = "LAYOUT",
        value_parser = clap::builder::PossibleValuesParser::new(threshold_log::kafka::Layout::NAMES)
            .try_map(|s| s.parse::<threshold_log::kafka::Layout>())
    )]
    kafka_records: threshold_log::kafka::Layout,
    /// On Kafka, how long each of this process's followers (its replica,
    /// publishers, the credentials and vault topics) lets the broker hold a
    /// fetch that finds nothing new, in milliseconds (1 to 10000). A Kafka
    /// broker answers a fetch as soon as records come, so on a cluster a
    /// longer wait (500) delays nothing and spares the brokers most idle
    /// requests; the defaults (100, the vault's 5) suit a broker that holds
    /// every fetch for its whole wait, such as the test broker.
    #[arg(
        long,
        env = "THRESHOLD_KAFKA_FETCH_WAIT",
        value_name = "MS",
        value_parser = clap::value_parser!(u64).range(
            *threshold_log::kafka::FETCH_WAIT_RANGE_MS.start()
                ..=*threshold_log::kafka::FETCH_WAIT_RANGE_MS.end()
        )
    )]
    kafka_fetch_wait: Option<u64>,
    /// The directory of the personal-data vault; default --data. Processes
    /// on one machine share it by naming the same directory; on Kafka, a
    /// key-encryption key (--vault-kek-file) keeps it in the vault topic
    /// instead, shared by processes on any machine.
    #[arg(long)]
    vault: Option<PathBuf>,
    /// Where track and trace is kept where `outcomes` run: default a file in
    /// --data (track.sqlite); `scylla://HOST:PORT[,HOST:PORT…]/KEYSPACE` for
    /// a ScyllaDB cluster (a build with `--features scylla`; the schema is
    /// deploy/scylla/schema.cql).
    #[arg(long, env = "THRESHOLD_TRACK_STORE", value_name = "STORE")]
    track_store: Option<String>,
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
    /// Let partners' webhook endpoints reach private, loopback and
    /// link-local addresses (receivers on the carrier's own network);
    /// refused by default (SSRF).
    #[arg(long)]
    webhooks_allow_private: bool,
    /// Serve the web console at http://ADDR/ (plaintext: a non-loopback
    /// address needs --insecure).
    #[arg(long, value_name = "ADDR")]
    console: Option<SocketAddr>,
    #[command(flatten)]
    vault_keys: crate::VaultKeyArgs,
    #[command(flatten)]
    tls: crate::TlsArgs,
    #[command(flatten)]
    telemetry: crate::admin::TelemetryArgs,
}

pub(crate) async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // Plaintext off loopback is refused before anything is bound or read.
    args.tls.check(args.listen, args.telemetry.admin)?;
    crate::console::check(args.console, args.tls.insecure)?;
    let tls = args.tls.tls()?;
    let vault_keks = args.vault_keys.keks()?;
    if vault_keks.is_some()
        && args.vault.is_some()
        && args.log != threshold_server::LogSpec::Embedded
    {
        return Err(
            "give --vault (a vault directory on one machine) or a key-encryption key \
                    (the vault topic on Kafka), not both"
                .into(),
        );
    }
    let listener = threshold_server::bind(args.listen).await?;
    let clock = if args.simulation {
        Clock::Simulated
    } else {
        Clock::System
    };
    let fleets = threshold_server::fleets(args.depots.as_deref(), &args.data)?;
    let console = crate::console::bind(args.console).await?;
    let telemetry = crate::admin::start(&args.telemetry).await?;
    let (console_fleets, data) = (fleets.clone(), args.data.clone());
    let config = Config {
        clock,
        placement: Placement {
            log: args.log,
            services: Services::only(args.services),
            name: args.name,
            topic_prefix: args.topic_prefix,
            records: args.kafka_records,
            fetch_wait_ms: args.kafka_fetch_wait,
            vault: args.vault,
            vault_keks,
            track: args.track_store,
            ..Placement::embedded()
        },
        tls,
        webhooks: threshold_webhook_service::Options {
            policy: threshold_webhook_service::Policy {
                allow_private: args.webhooks_allow_private,
            },
            ..Default::default()
        },
        ..Config::embedded(args.data, fleets)
    };
    let served = match Node::open(config).await {
        Ok(node) => {
            let console = match console {
                Some(l) => Some(crate::console::start(l, &node, console_fleets, &data)?),
                None => None,
            };
            let served = node.serve(listener, threshold_server::shutdown()).await;
            if let Some(task) = console {
                task.abort();
            }
            served
        }
        Err(e) => Err(e),
    };
    telemetry.shutdown(std::time::Duration::from_secs(5));
    Ok(served?)
}
