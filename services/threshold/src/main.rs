//! `threshold`: the operator's command.
//!
//! `run` is the main job (serve, load the sample day, simulate, report);
//! `serve` runs the gRPC services on one port over the embedded log;
//! `manifest load`, `report attempts` and `simulate` are clients;
//! `log stats|tail` and `export` read the log directly.
//!
//! Exit status: 0 success, 1 failure (message on stderr), 2 a manifest
//! loaded with rejected rows.

mod admin;
mod console;
mod credentials;
mod export;
mod health;
mod manifest;
mod outcomes;
mod progress;
mod report;
mod routing;
mod run;
mod serve;
mod simulate;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use threshold_log::Position;

/// Threshold: in-home and last-mile delivery for DK, FI, NO and SE.
#[derive(Parser)]
#[command(name = "threshold", version)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The main job: serve, load the sample manifests, simulate the day,
    /// report, and keep serving (`--demo`: stop after the report).
    Run(run::Args),
    /// Drive a delivery day through a running server's APIs and report it.
    Simulate(simulate::Args),
    /// Serve the gRPC services over the embedded log until Ctrl-C.
    Serve(serve::Args),
    /// Talk to a server about manifests.
    Manifest {
        #[command(subcommand)]
        command: ManifestCmd,
    },
    /// Credentials: bearer tokens by role and tenant, stored hashed under
    /// --data, or on Kafka in the deployment's credentials topic.
    Credentials {
        #[command(subcommand)]
        command: CredentialsCmd,
    },
    /// Follow a partner's delivery outcomes.
    Outcomes {
        #[command(subcommand)]
        command: OutcomesCmd,
    },
    /// A partner retailer's integrations: its webhook endpoints.
    Partner {
        #[command(subcommand)]
        command: PartnerCmd,
    },
    /// Reports from a server.
    Report {
        #[command(subcommand)]
        command: ReportCmd,
    },
    /// The route planner.
    Routing {
        #[command(subcommand)]
        command: RoutingCmd,
    },
    /// The tamper-evident audit trail of homes.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Personal data: erase a household's or resident's on request.
    Privacy {
        #[command(subcommand)]
        command: PrivacyCmd,
    },
    /// Flat fact tables (attempts, parcels, grants) for analysts' SQL
    /// tools, as Parquet or CSV, read from the embedded log; nothing
    /// personal is exported.
    Export(export::Args),
    /// Whether a server is serving (gRPC health): exit status 0 when it
    /// is, for container health checks.
    Health(health::Args),
    /// Look inside the embedded log.
    Log {
        #[command(subcommand)]
        command: LogCmd,
    },
}

#[derive(Subcommand)]
enum ManifestCmd {
    /// Load a manifest CSV; refused rows go to a rejects file.
    Load(manifest::LoadArgs),
}

#[derive(Subcommand)]
enum CredentialsCmd {
    /// Make a token for a role and tenant (printed once; stored hashed
    /// under --data).
    Add(credentials::AddArgs),
    /// Revoke a credential by name: its token is refused from then on (on
    /// Kafka, by every process within about a second). Exit status 2 when
    /// there was none.
    Revoke(credentials::RevokeArgs),
    /// List credentials: name, role, tenant (never a token).
    List(credentials::ListArgs),
    /// One credential per role for every tenant, their tokens written to
    /// --data/local-tokens.json for the CLI and simulations (a first
    /// embedded serve makes them itself).
    LocalTokens(credentials::LocalArgs),
}

#[derive(Subcommand)]
enum OutcomesCmd {
    /// Print the partner's outcomes as JSON lines, catch-up then live.
    Follow(outcomes::FollowArgs),
}

#[derive(Subcommand)]
enum PartnerCmd {
    /// Webhook endpoints: register, list, pause, resume, delete, rotate a
    /// secret, replay, list attempts.
    Webhook {
        #[command(subcommand)]
        command: webhooks::WebhookCmd,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Attempts per parcel, repeat-attempt and first-attempt success rates.
    Attempts(report::Args),
}

#[derive(Subcommand)]
enum RoutingCmd {
    /// Plan a local day's routes on a server, for every depot or some.
    Plan(routing::PlanArgs),
    /// Plan a benchmark instance (Solomon format) and print the routes.
    Solve(routing::SolveArgs),
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute a home's hash chain from the stored events; name the first
    /// broken link, or print the chain's head.
    Verify {
        /// The home.
        #[arg(long)]
        home: String,
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// A resident's receipt to check: its chain head and version, as
        /// `HASH@VERSION`.
        #[arg(long)]
        head: Option<String>,
    },
}

#[derive(Subcommand)]
enum PrivacyCmd {
    /// Destroy the keys a household's address (or a resident's data) is
    /// sealed under: the log keeps its events, statistics and hashes, and
    /// nobody can read the address again. Works on a running server's data.
    Forget {
        /// The household's street address, as manifests give it.
        #[arg(long, requires_all = ["postal_code", "city", "country"], conflicts_with = "subject")]
        street: Option<String>,
        /// Its postal code.
        #[arg(long)]
        postal_code: Option<String>,
        /// Its city.
        #[arg(long)]
        city: Option<String>,
        /// Its country: DK, FI, NO or SE.
        #[arg(long)]
        country: Option<String>,
        /// Or a resident, by the reference their grants carry.
        #[arg(long, conflicts_with_all = ["street", "subject"])]
        resident: Option<String>,
        /// Or the subject id itself (`hh-...`, as sealed data names it).
        #[arg(long, required_unless_present_any = ["street", "resident"])]
        subject: Option<String>,
        /// The data directory (its vault, on the embedded log).
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[command(flatten)]
        vault: VaultPlace,
    },
    /// Wrap every key of the vault (the vault topic on Kafka, `DATA/vault.db`
    /// on the embedded log) under the current key-encryption key
    /// (--vault-kek-file), unwrapping with the previous ones
    /// (--vault-kek-previous-file): the step of a rotation after every
    /// process was given the new key first.
    Rewrap {
        /// The data directory (its vault, on the embedded log).
        #[arg(long, default_value = "data")]
        data: PathBuf,
        #[command(flatten)]
        vault: VaultPlace,
    },
    /// Print a new random key-encryption key (64 hex digits) for the vault:
    /// keep it in a secret store, apart from the data directory, and give
    /// it to every process.
    NewKek,
}

/// Refuses a data directory with no vault in it: the privacy commands act
/// on a vault, and one made here would forget or rewrap nothing while
/// saying so.
fn existing_vault(data: &std::path::Path) -> Result<(), BoxError> {
    let file = data.join(threshold_privacy::VAULT_FILE);
    if file.exists() {
        return Ok(());
    }
    Err(format!(
        "{}: no vault here: give the data directory of the server (--data), or the vault \
         on Kafka (--log kafka://… with its key-encryption key)",
        file.display()
    )
    .into())
}

/// Where a vault is, for the privacy commands.
#[derive(clap::Args)]
struct VaultPlace {
    /// The log: `embedded` (the vault in --data), or
    /// `kafka://HOST:PORT[,HOST:PORT…]` (the deployment's vault topic, with
    /// its key-encryption key).
    #[arg(long, default_value = "embedded")]
    log: threshold_server::LogSpec,
    /// On Kafka, what the deployment's topic names start with.
    #[arg(long, default_value = "threshold")]
    topic_prefix: String,
    #[command(flatten)]
    keys: VaultKeyArgs,
}

impl VaultPlace {
    /// The vault: the file under `data` on the embedded log, the topic on
    /// Kafka.
    async fn open(&self, data: &std::path::Path) -> Result<threshold_privacy::Vault, BoxError> {
        match (&self.log, self.keys.keks()?) {
            (threshold_server::LogSpec::Kafka(brokers), Some(keks)) => {
                Ok(threshold_privacy::Vault::with_store(
                    threshold_server::KafkaVault::open(
                        brokers,
                        &self.topic_prefix,
                        "threshold-privacy",
                        keks,
                    )
                    .await?,
                ))
            }
            (threshold_server::LogSpec::Kafka(_), None) => Err(
                "the vault on Kafka needs its key-encryption key: --vault-kek-file FILE or \
                 THRESHOLD_VAULT_KEK (a vault in a directory is --data, without --log)"
                    .into(),
            ),
            (threshold_server::LogSpec::Embedded, keks) => {
                existing_vault(data)?;
                Ok(threshold_privacy::Vault::open_with(data, keks)?)
            }
        }
    }
}

#[derive(Subcommand)]
enum LogCmd {
    /// Events stored, by type, and the head position.
    Stats {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
    },
    /// Print events after a position, one line each.
    Tail {
        /// The data directory.
        #[arg(long, default_value = "data")]
        data: PathBuf,
        /// Print events after this position.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
}

/// The server allocates and frees small buffers for every event it carries
/// (records, rows, messages); jemalloc does that with less work than the
/// system allocator. It serves the C libraries linked in too (librdkafka,
/// which allocates each header of each record, and SQLite): the crate's
/// `unprefixed_malloc_on_supported_platforms` feature makes it `malloc`
/// and `free` for the whole process (see deploy/README.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("threshold: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("threshold: {e}");
            ExitCode::FAILURE
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a client command connects, and with which credential.
#[derive(clap::Args, Clone)]
pub(crate) struct ServerArgs {
    /// The server.
    #[arg(
        long,
        env = "THRESHOLD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    pub(crate) server: String,
    /// A bearer token. Without one, the local token of the command's role
    /// is read from the server's --data directory.
    #[arg(long, env = "THRESHOLD_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// The server's data directory, where its first start left local tokens.
    #[arg(long = "data", default_value = "data")]
    pub(crate) data: PathBuf,
    /// For an `https://` server: a CA certificate (PEM) to trust besides
    /// the system's, e.g. the server's own self-signed certificate.
    #[arg(long, env = "THRESHOLD_CA")]
    pub(crate) ca: Option<PathBuf>,
}

impl ServerArgs {
    /// The token to present as `role`: --token, or the local one.
    pub(crate) fn token(&self, role: threshold_auth::Role) -> Result<String, BoxError> {
        if let Some(t) = &self.token {
            return Ok(t.clone());
        }
        let local = threshold_auth::LocalTokens::load(&self.data)
            .map_err(|e| format!("no credentials: give --token (or THRESHOLD_TOKEN); {e}"))?;
        local.token(role).map(str::to_owned).ok_or_else(|| {
            format!(
                "{} holds no local {role} token; give --token",
                self.data.display()
            )
            .into()
        })
    }

    /// A connection whose calls carry the token of `role`.
    pub(crate) async fn connect(
        &self,
        role: threshold_auth::Role,
    ) -> Result<threshold_auth::Authed, BoxError> {
        let token = self.token(role)?;
        let ca = read_ca(self.ca.as_deref())?;
        Ok(threshold_auth::authed(
            connect(&self.server, ca.as_deref()).await?,
            Some(&token),
        )?)
    }
}

/// The CA certificate (PEM) of `--ca`, when given.
pub(crate) fn read_ca(path: Option<&std::path::Path>) -> Result<Option<Vec<u8>>, BoxError> {
    path.map(|p| {
        std::fs::read(p).map_err(|e| format!("cannot read --ca {}: {e}", p.display()).into())
    })
    .transpose()
}

/// A connection to the server a client command talks to, with the reason
/// spelled out when there is none. An `https://` server is trusted by the
/// system's roots and `ca` (PEM), when given.
pub(crate) async fn connect(
    server: &str,
    ca: Option<&[u8]>,
) -> Result<tonic::transport::Channel, BoxError> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig};
    let mut endpoint = Channel::from_shared(server.to_owned())
        .map_err(|e| format!("bad --server {server:?}: {e}"))?;
    if server.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = ca {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| format!("TLS to {server}: {e}"))?;
    } else if ca.is_some() {
        return Err(format!("--ca is for an https:// server, and {server} is not one").into());
    }
    Ok(endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach {server}: {}", causes(&e)))?)
}

/// An error and its causes, `: `-separated: a TLS refusal says why only
/// in its source.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The vault's key-encryption keys: on Kafka, for the deployment's vault
/// topic, shared by every process with nothing on disk; on the embedded
/// log, for `DATA/vault.db`.
#[derive(clap::Args, Clone, Default)]
pub(crate) struct VaultKeyArgs {
    /// Keep the vault's keys wrapped under the key-encryption key in FILE
    /// (64 hex digits, from `threshold privacy new-kek`); THRESHOLD_VAULT_KEK
    /// may give the digits instead. On Kafka, the vault is then the
    /// deployment's vault topic; without either, a file under --vault (or
    /// --data), for processes on one machine. On the embedded log, the key
    /// wraps `DATA/vault.db`'s secret and keys (those kept in the clear are
    /// wrapped at start); a vault wrapped so does not open without it.
    #[arg(long, env = "THRESHOLD_VAULT_KEK_FILE", value_name = "FILE")]
    pub(crate) vault_kek_file: Option<PathBuf>,
    /// During a rotation, a previous key-encryption key, still accepted to
    /// unwrap (repeatable); see `threshold privacy rewrap`.
    #[arg(long, value_name = "FILE")]
    pub(crate) vault_kek_previous_file: Vec<PathBuf>,
}

impl VaultKeyArgs {
    /// The keys given, if any: the current one first.
    pub(crate) fn keks(&self) -> Result<Option<threshold_privacy::Keks>, BoxError> {
        use threshold_privacy::Kek;
        let current = match (&self.vault_kek_file, std::env::var("THRESHOLD_VAULT_KEK")) {
            (Some(file), _) => Kek::read(file)?,
            (None, Ok(hex)) => Kek::from_hex(&hex, "THRESHOLD_VAULT_KEK")?,
            (None, Err(_)) if self.vault_kek_previous_file.is_empty() => return Ok(None),
            (None, Err(_)) => {
                return Err("--vault-kek-previous-file needs the current key too: \
                            --vault-kek-file or THRESHOLD_VAULT_KEK"
                    .into());
            }
        };
        let previous = self
            .vault_kek_previous_file
            .iter()
            .map(|f| Kek::read(f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(threshold_privacy::Keks::new(current, previous)))
    }
}

/// Options of the commands that serve: TLS, and whether plaintext on a
/// non-loopback address is meant.
#[derive(clap::Args, Clone)]
pub(crate) struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM, leaf first).
    #[arg(long, requires = "tls_key", value_name = "PEM")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// Serve plaintext on a non-loopback address (gRPC without TLS, the
    /// admin port): only behind something that encrypts, e.g. a
    /// TLS-terminating proxy or a private network you trust.
    #[arg(long)]
    pub(crate) insecure: bool,
}

impl TlsArgs {
    /// The certificate and key to serve, when given.
    pub(crate) fn tls(&self) -> Result<Option<threshold_server::Tls>, BoxError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(threshold_server::Tls::read(cert, key)?)),
            _ => Ok(None),
        }
    }

    /// Refuses, before anything is bound, a gRPC address `listen` or an
    /// admin address served in plaintext off loopback without --insecure.
    pub(crate) fn check(
        &self,
        listen: std::net::SocketAddr,
        admin: Option<std::net::SocketAddr>,
    ) -> Result<(), BoxError> {
        threshold_server::exposure(listen, self.tls_cert.is_some(), self.insecure)?;
        if let Some(admin) = admin
            && threshold_server::exposure(admin, false, self.insecure).is_err()
        {
            return Err(format!(
                "refusing to serve metrics on {admin} in plaintext: the admin port has no TLS; \
                 give it a loopback address (e.g. 127.0.0.1:9090), or --insecure to expose it anyway"
            )
            .into());
        }
        Ok(())
    }
}

/// Runs a command; `Ok(false)` is a partial success (exit status 2).
async fn run(cli: Cli) -> Result<bool, Box<dyn std::error::Error + Send + Sync>> {
    match cli.command {
        Cmd::Run(args) => run::run(args).await.map(|()| true),
        Cmd::Serve(args) => serve::run(args).await.map(|()| true),
        Cmd::Simulate(args) => simulate::run(args).await.map(|()| true),
        Cmd::Export(args) => export::export(args).map(|()| true),
        Cmd::Health(args) => health::check(args).await.map(|()| true),
        Cmd::Manifest {
            command: ManifestCmd::Load(args),
        } => manifest::load(args).await,
        Cmd::Credentials {
            command: CredentialsCmd::Add(args),
        } => credentials::add(args).await.map(|()| true),
        Cmd::Credentials {
            command: CredentialsCmd::Revoke(args),
        } => credentials::revoke(args).await,
        Cmd::Credentials {
            command: CredentialsCmd::List(args),
        } => credentials::list(args).await.map(|()| true),
        Cmd::Credentials {
            command: CredentialsCmd::LocalTokens(args),
        } => credentials::local_tokens(args).await.map(|()| true),
        Cmd::Outcomes {
            command: OutcomesCmd::Follow(args),
        } => outcomes::follow(args).await.map(|()| true),
        Cmd::Partner {
            command: PartnerCmd::Webhook { command },
        } => webhooks::run(command).await.map(|()| true),
        Cmd::Report {
            command: ReportCmd::Attempts(args),
        } => report::run(args).await.map(|()| true),
        Cmd::Routing {
            command: RoutingCmd::Plan(args),
        } => routing::plan(args).await.map(|()| true),
        Cmd::Routing {
            command: RoutingCmd::Solve(args),
        } => tokio::task::spawn_blocking(move || routing::solve_file(args))
            .await?
            .map(|()| true),
        Cmd::Audit {
            command: AuditCmd::Verify { home, data, head },
        } => {
            let id = threshold_domain::HomeId::new(&home)?;
            let stream = threshold_domain::StreamId::home(&id);
            let events: Vec<_> =
                threshold_log::embedded::read_only(&data, Position(0), usize::MAX)?
                    .into_iter()
                    .filter(|e| e.stream == stream)
                    .collect();
            if events.is_empty() {
                return Err(format!("no events of home {home} in {}", data.display()).into());
            }
            let chain_head =
                threshold_log::audit::verify(&events).map_err(|b| format!("home {home}: {b}"))?;
            println!(
                "home {home}: {} events, chain intact, head {}",
                events.len(),
                threshold_log::audit::hex(&chain_head)
            );
            if let Some(receipt) = head {
                let (hash, version) = receipt
                    .split_once('@')
                    .and_then(|(h, v)| Some((h, v.parse::<u64>().ok()?)))
                    .ok_or_else(|| format!("--head {receipt:?}: expected HASH@VERSION"))?;
                threshold_log::audit::check_receipt(&events, hash, version)
                    .map_err(|why| format!("home {home}: the receipt does not hold: {why}"))?;
                println!("home {home}: the receipt's head {hash} at version {version} holds");
            }
            Ok(true)
        }
        Cmd::Privacy {
            command:
                PrivacyCmd::Forget {
                    street,
                    postal_code,
                    city,
                    country,
                    resident,
                    subject,
                    data,
                    vault,
                },
        } => {
            let vault = vault.open(&data).await?;
            let subject = match (
                subject.or(resident.map(|r| threshold_access_service::resident_subject(&r))),
                street,
            ) {
                (Some(s), _) => s,
                (None, Some(street)) => {
                    let country: threshold_domain::Country =
                        country.as_deref().unwrap_or_default().parse()?;
                    let parts = [
                        street.as_str(),
                        postal_code.as_deref().unwrap_or_default(),
                        city.as_deref().unwrap_or_default(),
                        country.code(),
                    ];
                    vault.find_household(&parts)?.ok_or_else(|| {
                        format!(
                            "no household at {}: never seen, or forgotten already",
                            parts.join(", ")
                        )
                    })?
                }
                (None, None) => return Err("give --street ... or --subject".into()),
            };
            let keys = vault.forget(&subject)?;
            if keys == 0 {
                println!(
                    "{subject}: nothing to forget (no keys in {})",
                    vault.describe()
                );
            } else {
                println!(
                    "{subject}: {keys} key(s) destroyed; its sealed data in the log can no longer be read"
                );
            }
            Ok(true)
        }
        Cmd::Privacy {
            command: PrivacyCmd::Rewrap { data, vault },
        } => {
            let keks = vault
                .keys
                .keks()?
                .ok_or("rewrap needs the new key-encryption key: --vault-kek-file FILE")?;
            let current = keks.current().id_hex();
            let threshold_server::LogSpec::Kafka(brokers) = &vault.log else {
                existing_vault(&data)?;
                let store = threshold_privacy::SqliteStore::open_with(&data, Some(keks))?;
                let n = store.rewrap()?;
                println!(
                    "{}: {n} value(s) rewrapped under key-encryption key {current}",
                    store.path().display()
                );
                return Ok(true);
            };
            let store = threshold_server::KafkaVault::open(
                brokers,
                &vault.topic_prefix,
                "threshold-privacy",
                keks,
            )
            .await?;
            let n = tokio::task::spawn_blocking(move || store.rewrap()).await??;
            println!("{n} value(s) rewrapped under key-encryption key {current}");
            Ok(true)
        }
        Cmd::Privacy {
            command: PrivacyCmd::NewKek,
        } => {
            println!("{}", threshold_privacy::Kek::generate_hex());
            Ok(true)
        }
        Cmd::Log {
            command: LogCmd::Stats { data },
        } => {
            let stats = threshold_log::embedded::stats(&data)?;
            let total: u64 = stats.by_type.iter().map(|(_, n)| n).sum();
            println!(
                "{}: {total} events (head position {})",
                data.join(threshold_log::embedded::DB_FILE).display(),
                stats.head
            );
            for (t, n) in stats.by_type {
                println!("  {t:<28} {n:>9}");
            }
            Ok(true)
        }
        Cmd::Log {
            command: LogCmd::Tail { data, after, limit },
        } => {
            for r in threshold_log::embedded::read_only(&data, Position(after), limit)? {
                println!(
                    "{:>8} {} v{} {} {}",
                    r.position,
                    r.stream,
                    r.stream_version,
                    r.event.event_type,
                    r.event.occurred_at.to_rfc3339()
                );
            }
            Ok(true)
        }
    }
}
