//! What the tests of Threshold's services share: a [`Sandbox`] that runs
//! the production server of `threshold-server` on 127.0.0.1:0 over a
//! temporary data directory, with clients as each role, and [`fixtures`]:
//! the requests, facts and manifests tests start from.
//!
//! Only ever a dev-dependency. Tests of a service use it from `tests/`
//! (integration tests), never from `#[cfg(test)]` modules in `src/`: the
//! server depends on every service, so a unit test using it would make a
//! crate depend on itself.

pub mod fixtures;

pub use threshold_server::Service;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use threshold_access_service::{Access, Clock};
use threshold_auth::{Authed, Credential, CredentialStore, LocalTokens, Role};
use threshold_domain::EventId;
use threshold_handheld_service::{Handhelds, Limits};
use threshold_log::EventLog;
use threshold_manifest_service::LoadLimits;
use threshold_outcome_service::Outcomes;
use threshold_privacy::Vault;
use threshold_routing::depot::Fleets;
use threshold_server::{Config, LogSpec, Node, Placement, Services, Tls};
use tokio::sync::oneshot;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// How a [`Sandbox`] is started: every service on the embedded log and the
/// system clock, with the bundled fleets, unless told otherwise.
pub struct Builder {
    log: LogSpec,
    name: String,
    topic_prefix: String,
    partitions: Option<i32>,
    vault: Option<PathBuf>,
    clock: Clock,
    services: Services,
    fleets: Option<Fleets>,
    handheld_limits: Limits,
    tls: Option<Tls>,
    manifest_limits: LoadLimits,
    webhooks: threshold_webhook_service::Options,
    dir: Option<tempfile::TempDir>,
}

impl Builder {
    /// On the data directory `dir` (one a stopped sandbox handed back,
    /// see [`Sandbox::stop_keeping_data`]) instead of a new one.
    pub fn in_dir(mut self, dir: tempfile::TempDir) -> Self {
        self.dir = Some(dir);
        self
    }

    /// On Kafka at `brokers` (`host:port[,…]`) instead of the embedded log.
    pub fn kafka(mut self, brokers: impl Into<String>) -> Self {
        self.log = LogSpec::Kafka(brokers.into());
        self
    }

    /// On Kafka, this process's name.
    pub fn name(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// On Kafka, what topic names start with.
    pub fn topic_prefix(mut self, prefix: &str) -> Self {
        prefix.clone_into(&mut self.topic_prefix);
        self
    }

    /// On Kafka, the partitions of the topics this process creates.
    pub fn partitions(mut self, partitions: i32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The vault in `dir` (shared by sandboxes of one deployment) rather
    /// than in the sandbox's data directory.
    pub fn vault(mut self, dir: &Path) -> Self {
        self.vault = Some(dir.to_path_buf());
        self
    }

    /// Grant windows decided on the simulator's clock, carried by requests.
    pub fn simulated(mut self) -> Self {
        self.clock = Clock::Simulated;
        self
    }

    /// Grant windows decided on `clock`.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// These services only.
    pub fn services(mut self, services: impl IntoIterator<Item = Service>) -> Self {
        self.services = Services::only(services);
        self
    }

    /// Plan with `fleets` rather than the bundled configuration.
    pub fn fleets(mut self, fleets: Fleets) -> Self {
        self.fleets = Some(fleets);
        self
    }

    /// Handheld streams limited to `limits`.
    pub fn handheld_limits(mut self, limits: Limits) -> Self {
        self.handheld_limits = limits;
        self
    }

    /// Served over TLS with this certificate chain and key (PEM); the
    /// sandbox's own clients trust `cert`, so it must be self-signed or
    /// its own CA. [`Sandbox::url`] is then `https://127.0.0.1:PORT`.
    pub fn tls(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.tls = Some(Tls {
            cert: cert.into(),
            key: key.into(),
        });
        self
    }

    /// Manifest loads limited to `limits` (a short idle timeout, fewer loads).
    pub fn manifest_limits(mut self, limits: LoadLimits) -> Self {
        self.manifest_limits = limits;
        self
    }

    /// Partners' webhooks delivered as `options` say (a test's endpoints
    /// are on loopback, which the default policy refuses).
    pub fn webhooks(mut self, options: threshold_webhook_service::Options) -> Self {
        self.webhooks = options;
        self
    }

    /// Opens the server on a new temporary data directory, serves it on
    /// 127.0.0.1:0 and connects to it. Panics if it cannot: a test that
    /// has no server has nothing to test.
    pub async fn start(self) -> Sandbox {
        let dir = match self.dir {
            Some(dir) => dir,
            None => tempfile::tempdir().expect("a temporary data directory"),
        };
        let fleets = match self.fleets {
            Some(f) => f,
            None => threshold_server::fleets(None, dir.path()).expect("the bundled fleets"),
        };
        let config = Config {
            clock: self.clock,
            placement: Placement {
                log: self.log,
                services: self.services,
                name: self.name,
                topic_prefix: self.topic_prefix,
                partitions: self.partitions,
                vault: self.vault,
                vault_keks: None,
                track: None,
                ..Placement::embedded()
            },
            handheld_limits: self.handheld_limits,
            tls: self.tls.clone(),
            manifest_limits: self.manifest_limits,
            webhooks: self.webhooks,
            ..Config::embedded(dir.path(), fleets)
        };
        let listener = threshold_server::bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("the bound address");
        let kafka = matches!(config.placement.log, LogSpec::Kafka(_));
        let name = config.placement.name.clone();
        let node = Node::open(config).await.expect("the server opens");
        let store = Arc::clone(node.authenticator().store());
        // On Kafka the node makes no local tokens: the sandbox makes its own
        // in the deployment's credentials topic.
        if kafka {
            LocalTokens::make_in(&*store, dir.path(), &format!("local-{name}"))
                .await
                .expect("local tokens in the credentials topic");
        }
        let (log, access, outcomes, vault) =
            (node.log(), node.access(), node.outcomes(), node.vault());
        let (handhelds, planning) = (node.handhelds(), node.planning());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(node.serve(listener, async {
            // Told to stop, or the sandbox dropped.
            let _ = stopped.await;
        }));
        let ca = self.tls.map(|tls| tls.cert);
        let scheme = if ca.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}");
        let channel = connect(&url, ca.as_deref())
            .await
            .expect("connect to the sandbox");
        let tokens = LocalTokens::load(dir.path()).expect("the local tokens");
        Sandbox {
            url,
            ca,
            channel,
            tokens,
            store,
            kafka,
            log,
            access,
            outcomes,
            handhelds,
            planning,
            vault,
            stop: Some(stop),
            server: Some(server),
            dir,
        }
    }
}

/// The production server on 127.0.0.1:0 over a temporary data directory;
/// it stops when dropped (or on [`Sandbox::shutdown`]).
pub struct Sandbox {
    url: String,
    /// The certificate its clients trust, when it serves TLS.
    ca: Option<Vec<u8>>,
    channel: Channel,
    tokens: LocalTokens,
    log: Arc<dyn EventLog>,
    access: Option<Access>,
    outcomes: Option<Outcomes>,
    handhelds: Option<Handhelds>,
    planning: Option<threshold_planning_service::Planning>,
    vault: Arc<Vault>,
    /// Its credentials store, and whether it is Kafka's topic.
    store: Arc<dyn CredentialStore>,
    kafka: bool,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<threshold_server::Result<()>>>,
    // Dropped last: the server's files live in it.
    dir: tempfile::TempDir,
}

/// A connection to `url`, trusting `ca` (PEM) for TLS when given: the
/// connection, or why there is none (a TLS test expects some to fail).
/// Panics on a `url` that is not a URI: a test's mistake.
pub async fn connect(url: &str, ca: Option<&[u8]>) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Channel::from_shared(url.to_owned()).expect("a URI");
    if let Some(ca) = ca {
        endpoint = endpoint
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))?;
    }
    endpoint.connect().await
}

impl Sandbox {
    /// Every service on the embedded log, on the system clock.
    pub async fn start() -> Sandbox {
        Sandbox::builder().start().await
    }

    /// A sandbox to configure before it starts.
    pub fn builder() -> Builder {
        Builder {
            log: LogSpec::Embedded,
            name: "threshold".into(),
            topic_prefix: "threshold".into(),
            partitions: None,
            vault: None,
            clock: Clock::System,
            services: Services::all(),
            fleets: None,
            handheld_limits: Limits::default(),
            tls: None,
            manifest_limits: LoadLimits::default(),
            webhooks: threshold_webhook_service::Options::default(),
            dir: None,
        }
    }

    /// The server's address, `http://127.0.0.1:PORT` (`https://` when it
    /// serves TLS).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The connection every client of this sandbox shares, without a token.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// A new connection of its own, without a token.
    pub async fn connect(&self) -> Channel {
        connect(&self.url, self.ca.as_deref())
            .await
            .expect("connect to the sandbox")
    }

    /// The certificate the sandbox's clients trust, when it serves TLS.
    pub fn ca(&self) -> Option<&[u8]> {
        self.ca.as_deref()
    }

    /// The server's data directory (credentials, the embedded log).
    pub fn data(&self) -> &Path {
        self.dir.path()
    }

    /// The local credentials the server made, one per role, every tenant.
    pub fn tokens(&self) -> &LocalTokens {
        &self.tokens
    }

    /// The log the services use (metered), to append facts directly or
    /// read what was stored.
    pub fn log(&self) -> Arc<dyn EventLog> {
        Arc::clone(&self.log)
    }

    /// The server's access service, e.g. to run its watcher at a given time.
    pub fn access(&self) -> Access {
        self.access
            .clone()
            .expect("the sandbox runs the access service")
    }

    /// The server's outcome service, e.g. to count its subscriptions.
    pub fn outcomes(&self) -> Outcomes {
        self.outcomes
            .clone()
            .expect("the sandbox runs the outcome service")
    }

    /// The server's handheld service, e.g. to count its refusals.
    pub fn handhelds(&self) -> Handhelds {
        self.handhelds
            .clone()
            .expect("the sandbox runs the handheld service")
    }

    /// The server's planning service, e.g. to count its solves.
    pub fn planning(&self) -> threshold_planning_service::Planning {
        self.planning
            .clone()
            .expect("the sandbox runs the planning service")
    }

    /// The personal-data vault the services seal with.
    pub fn vault(&self) -> Arc<Vault> {
        Arc::clone(&self.vault)
    }

    /// The shared connection with the local token of `role` (every tenant).
    pub fn as_role(&self, role: Role) -> Authed {
        self.tokens
            .channel(self.channel(), role)
            .expect("a local token")
    }

    /// As the local planner (every depot).
    pub fn planner(&self) -> Authed {
        self.as_role(Role::Planner)
    }

    /// As the local handheld (every driver).
    pub fn handheld(&self) -> Authed {
        self.as_role(Role::Handheld)
    }

    /// As the local resident (every home).
    pub fn resident(&self) -> Authed {
        self.as_role(Role::Resident)
    }

    /// As the local lock vendor (every vendor).
    pub fn lock_vendor(&self) -> Authed {
        self.as_role(Role::LockVendor)
    }

    /// As the carrier's analyst.
    pub fn analyst(&self) -> Authed {
        self.as_role(Role::Analyst)
    }

    /// As partner `tenant`, with a new credential.
    pub fn partner(&self, tenant: &str) -> Authed {
        self.client_as(Role::Partner, tenant)
    }

    /// The shared connection without a token.
    pub fn unauthenticated(&self) -> Authed {
        threshold_auth::authed(self.channel(), None).expect("no token")
    }

    /// A new credential of `role` for `tenant`, named `name`: its token.
    ///
    /// On Kafka it waits for the credentials topic on this thread: call it
    /// from a multi-threaded runtime there.
    pub fn mint(&self, name: &str, role: Role, tenant: &str) -> String {
        let (credential, token) = Credential::new(name, role, tenant).expect("a credential");
        self.store_credential(credential);
        token
    }

    /// [`Self::mint`], the token refused from `at` on.
    pub fn mint_until(
        &self,
        name: &str,
        role: Role,
        tenant: &str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let (credential, token) = Credential::new(name, role, tenant).expect("a credential");
        self.store_credential(credential.expiring_at(at));
        token
    }

    fn store_credential(&self, credential: Credential) {
        if self.kafka {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(self.store.add(credential))
            })
        } else {
            threshold_auth::FileCredentials::new(self.data()).insert(credential)
        }
        .expect("a credential stored");
    }

    /// Revokes the credential named `name` in the server's store; `false`
    /// when there was none.
    pub async fn revoke(&self, name: &str) -> bool {
        self.store
            .revoke(name)
            .await
            .expect("the credentials store")
    }

    /// Revokes every credential of `role` for `tenant` itself (not the
    /// local one of every tenant); how many.
    pub async fn revoke_every(&self, role: Role, tenant: &str) -> usize {
        let current = self.store.current().expect("the credentials store");
        let names: Vec<String> = current
            .principals()
            .into_iter()
            .filter(|p| p.role == role && p.tenant == tenant)
            .map(|p| p.name.clone())
            .collect();
        for name in &names {
            self.revoke(name).await;
        }
        names.len()
    }

    /// The shared connection with a new credential of `role` for `tenant`.
    pub fn client_as(&self, role: Role, tenant: &str) -> Authed {
        let name = format!("{role}-{tenant}-{}", EventId::new());
        let token = self.mint(&name, role, tenant);
        threshold_auth::authed(self.channel(), Some(&token)).expect("a token")
    }

    /// Stops the server as [`Self::shutdown`] does and hands back its data
    /// directory, for a restart on it ([`Builder::in_dir`]).
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(
            &mut self.dir,
            tempfile::tempdir().expect("a temporary directory"),
        );
        self.shutdown().await;
        dir
    }

    /// Stops the server and waits until it has closed the log. Connections
    /// still open hold a graceful stop up: drop clients first.
    pub async fn shutdown(mut self) {
        // The sandbox's own connection would hold the stop up too.
        self.channel = Channel::from_static("http://127.0.0.1:1").connect_lazy();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server
                .await
                .expect("the server task")
                .expect("the server stops cleanly");
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
