//! `threshold run`: the main job. Serves every service on the embedded
//! store, simulates a month of deliveries through its own gRPC port, prints
//! the attempts-per-parcel report, and keeps serving until Ctrl-C
//! (`--demo`: stops after the report), the console showing the history.
//!
//! The days (`--days`, 31 by default) end on the sample day, 2026-11-23, a
//! Monday, whose bundled manifests for DK, FI, NO and SE are loaded on it;
//! every day before it brings a generated manifest (`--parcels` a weekday,
//! half on Saturdays, none on Sundays). The default range starts on
//! Saturday 2026-10-24, the day before summer time ends in all four
//! countries, so the history crosses a DST change. Failed parcels are tried
//! again on the next delivery day (see [`crate::simulate`]). `--days 1`
//! plays the sample day alone. The server runs as a simulation: the
//! simulator's clock decides grant windows, so the days play out whatever
//! today's date is.

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{Days, NaiveDate};
use threshold_access_service::Clock;

use threshold_server::{Config, Node, Placement};

use crate::simulate;

/// The bundled manifests of the sample day.
const SAMPLES: [(&str, &str); 4] = [
    (
        "2026-11-23-dk.csv",
        include_str!("../../../crates/manifest/samples/2026-11-23-dk.csv"),
    ),
    (
        "2026-11-23-fi.csv",
        include_str!("../../../crates/manifest/samples/2026-11-23-fi.csv"),
    ),
    (
        "2026-11-23-no.csv",
        include_str!("../../../crates/manifest/samples/2026-11-23-no.csv"),
    ),
    (
        "2026-11-23-se.csv",
        include_str!("../../../crates/manifest/samples/2026-11-23-se.csv"),
    ),
];

/// The sample day: the last of the simulated range.
const SAMPLE_DAY: (i32, u32, u32) = (2026, 11, 23);

/// New parcels in a generated weekday: a month of them plays in a few
/// minutes on a 2-core machine.
const PARCELS_PER_DAY: u32 = 200;

/// Options of `threshold run`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The data directory of the embedded log.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Where to listen for gRPC.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Seed of the simulated days.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Days to simulate, ending on the sample day 2026-11-23; the default
    /// starts on 2026-10-24, across the end of summer time. 1: the sample
    /// day alone.
    #[arg(long, default_value_t = 31, value_parser = clap::value_parser!(u32).range(1..=simulate::MAX_DAYS as i64))]
    days: u32,
    /// New parcels in a generated weekday before the sample day (half on
    /// Saturdays, none on Sundays).
    #[arg(long, default_value_t = PARCELS_PER_DAY)]
    parcels: u32,
    /// Stop after the report instead of serving on.
    #[arg(long)]
    demo: bool,
    /// The log: `embedded` (in --data), or `kafka://HOST:PORT[,HOST:PORT…]`.
    #[arg(long, default_value = "embedded")]
    log: threshold_server::LogSpec,
    /// Deliver partner nordshop's outcomes of the day to this webhook URL
    /// (registered before the day starts; its secret is printed).
    #[arg(long)]
    webhook: Option<String>,
    /// Let webhook endpoints reach private and loopback addresses (a
    /// receiver on this machine); refused by default.
    #[arg(long)]
    webhooks_allow_private: bool,
    /// Serve the web console at http://ADDR/ (plaintext: a non-loopback
    /// address needs --insecure).
    #[arg(long, value_name = "ADDR")]
    console: Option<SocketAddr>,
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
    // The simulator trusts the certificate the server is given.
    let ca = tls.as_ref().map(|t| t.cert.clone());
    let listener = threshold_server::bind(args.listen).await?;
    let console = crate::console::bind(args.console).await?;
    let telemetry = crate::admin::start(&args.telemetry).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let demo = args.demo;
    // The server stops when told to (after a demo's report, or when the day
    // fails), or on Ctrl-C when it serves on.
    let stop = async move {
        if demo {
            let _ = stop_rx.await;
        } else {
            tokio::select! {
                _ = stop_rx => {}
                () = threshold_server::shutdown() => {}
            }
        }
    };
    // The simulator plays every role with the local credentials, made here
    // (or by an earlier start) before the server opens: in the data
    // directory, or on Kafka in the deployment's credentials topic.
    let store = threshold_server::credential_store(
        &args.log,
        &args.data,
        &Placement::embedded().topic_prefix,
        "threshold-run",
    )
    .await?;
    let tokens = match args.log {
        threshold_server::LogSpec::Embedded => {
            threshold_auth::LocalTokens::ensure(&args.data)?;
            threshold_auth::LocalTokens::load(&args.data)?
        }
        threshold_server::LogSpec::Kafka(_) => {
            threshold_auth::LocalTokens::make_in(&*store, &args.data, "local").await?
        }
    };
    let fleets = threshold_server::fleets(None, &args.data)?;
    let (console_fleets, data) = (fleets.clone(), args.data.clone());
    let config = Config {
        clock: Clock::Simulated,
        placement: Placement {
            log: args.log,
            ..Placement::embedded()
        },
        tls,
        webhooks: threshold_webhook_service::Options {
            policy: threshold_webhook_service::Policy {
                allow_private: args.webhooks_allow_private,
            },
            ..Default::default()
        },
        ..Config::embedded(args.data.clone(), fleets)
    };
    let server = tokio::spawn(async move {
        let node = Node::open(config).await?;
        let console = match console {
            Some(l) => Some(crate::console::start(l, &node, console_fleets, &data)?),
            None => None,
        };
        let served = node.serve(listener, stop).await;
        if let Some(task) = console {
            task.abort();
        }
        served.map_err(crate::BoxError::from)
    });
    if let Some(hook) = &args.webhook {
        register(&url, ca.as_deref(), &*store, hook).await?;
    }

    let (y, m, d) = SAMPLE_DAY;
    let date = NaiveDate::from_ymd_opt(y, m, d).ok_or("sample date")?;
    let first = date
        .checked_sub_days(Days::new(u64::from(args.days) - 1))
        .ok_or("the first day is before the calendar")?;
    let manifests = SAMPLES
        .iter()
        .map(|(name, csv)| ((*name).to_owned(), csv.as_bytes().to_vec()))
        .collect();
    let days = simulate::range(
        first,
        args.days,
        args.parcels,
        args.seed,
        Some((date, manifests)),
    )?;
    let day = simulate::play(
        &simulate::service_urls(&url, &[])?,
        ca.as_deref(),
        &tokens,
        args.seed,
        simulate::PLAN_GENERATIONS,
        days,
    )
    .await;
    let result = match day {
        Err(e) => {
            let _ = stop_tx.send(());
            let _ = server.await;
            Err(e)
        }
        Ok(()) => {
            if demo {
                let _ = stop_tx.send(());
            } else {
                println!("\nserving on {url} until Ctrl-C. Try:");
                let data = args.data.display();
                // Over TLS, the clients trust the server's own certificate.
                let ca = args
                    .tls
                    .tls_cert
                    .as_ref()
                    .map(|cert| format!(" --ca {}", cert.display()))
                    .unwrap_or_default();
                println!(
                    "  threshold report attempts --by reason --server {url}{ca} --data {data}"
                );
                // A partner's view of the same day, with a token made for the demo.
                if let Ok(token) = new_token(
                    &*store,
                    "nordshop",
                    threshold_auth::Role::Partner,
                    "nordshop",
                )
                .await
                {
                    println!(
                        "  threshold outcomes follow --token {token} --server {url}{ca}   # partner nordshop"
                    );
                }
            }
            server.await?
        }
    };
    telemetry.shutdown(std::time::Duration::from_secs(5));
    result
}

/// Registers `url` as partner nordshop's webhook endpoint on the server at
/// `server`, with a token made for it, and prints the endpoint's secret.
async fn register(
    server: &str,
    ca: Option<&[u8]>,
    store: &dyn threshold_auth::CredentialStore,
    url: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    use threshold_api::v1::AddEndpointRequest;
    use threshold_api::v1::webhook_service_client::WebhookServiceClient;
    let token = new_token(
        store,
        &format!("nordshop-webhook-{}", uuid::Uuid::new_v4().simple()),
        threshold_auth::Role::Partner,
        "nordshop",
    )
    .await?;
    let channel = threshold_auth::authed(crate::connect(server, ca).await?, Some(&token))?;
    let reply = WebhookServiceClient::new(channel)
        .add_endpoint(AddEndpointRequest {
            partner: String::new(),
            url: url.to_owned(),
            kinds: vec![],
            from_start: false,
        })
        .await
        .map_err(|s| format!("webhook {url}: {}", s.message()))?
        .into_inner();
    let id = reply.endpoint.map(|e| e.id).unwrap_or_default();
    println!(
        "webhook: partner nordshop's outcomes go to {url} (endpoint {id}, secret {})",
        reply.secret
    );
    Ok(())
}

/// A new credential in `store`, and its token.
async fn new_token(
    store: &dyn threshold_auth::CredentialStore,
    name: &str,
    role: threshold_auth::Role,
    tenant: &str,
) -> Result<String, threshold_auth::Error> {
    let (credential, token) = threshold_auth::Credential::new(name, role, tenant)?;
    store.add(credential).await?;
    Ok(token)
}
