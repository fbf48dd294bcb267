//! Webhooks: a partner retailer receives its parcels' outcomes as signed
//! HTTPS POSTs that follow the Standard Webhooks specification, retried
//! until acknowledged.
//!
//! # Layout
//!
//! - [`Webhooks`]: the registry a partner manages its endpoints through
//!   (add, list, pause, resume, delete, rotate a secret, replay, list
//!   attempts), and the deliveries it runs. Every call names the partner
//!   it acts for; an endpoint of another partner is not found.
//! - [`payload`]: the JSON body, built on the OutcomeService's redaction.
//! - [`proof`]: an in-home delivery's receipt chain head, from the log.
//! - [`signature`]: the `webhook-*` headers.
//! - [`guard`]: where an endpoint may point (the SSRF boundary).
//! - [`client`]: one bounded, signed POST.
//! - [`delivery`]: a task per endpoint, the retry [`Schedule`](delivery::Schedule).
//! - [`service`]: the registry as the gRPC `WebhookService`.
//! - [`store`]: endpoints, secrets, delivered positions and attempts in
//!   SQLite; what is delivered always comes from the log.

pub mod client;
pub mod delivery;
pub mod guard;
pub mod payload;
pub mod proof;
pub mod service;
pub mod signature;
pub mod store;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use threshold_log::{EventLog, Position};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

pub use delivery::Schedule;
pub use guard::Policy;
pub use signature::Secret;
pub use store::{Alert, Attempt, Endpoint, State, Verdict};

/// What can go wrong managing webhooks.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request field is not acceptable; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// An endpoint points where endpoints may not (SSRF).
    #[error("{0}")]
    Refused(String),
    /// Not found (or not the caller's).
    #[error("{0} not found")]
    NotFound(String),
    /// A per-partner bound is reached.
    #[error("{0}")]
    Exhausted(String),
    /// The store failed.
    #[error("webhook store: {0}")]
    Store(String),
    /// The log failed.
    #[error("log: {0}")]
    Log(#[from] threshold_log::Error),
}

/// The most attempts or alerts one listing returns: a caller pages on
/// with the last sequence it got.
pub const MAX_PAGE: usize = 1000;

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How deliveries run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where endpoints may point.
    pub policy: Policy,
    /// A request is abandoned (and retried) after this long.
    pub timeout: Duration,
    /// When failed deliveries are retried.
    pub schedule: Schedule,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            timeout: Duration::from_secs(10),
            schedule: Schedule::default(),
        }
    }
}

/// Where a new endpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// With the next event appended (the default).
    Now,
    /// After log position `cursor` (0: from the beginning).
    After(u64),
}

/// A partner's endpoints and the deliveries to them.
pub struct Webhooks {
    ctx: Arc<delivery::Ctx>,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
}

impl Webhooks {
    /// Opens the registry stored at `path`, delivering `log`'s outcomes.
    /// Deliveries start with [`Webhooks::start`].
    pub fn open(log: Arc<dyn EventLog>, path: impl AsRef<Path>, options: Options) -> Result<Self> {
        Self::open_sealed(log, path, options, None)
    }

    /// [`Webhooks::open`], with the endpoints' signing secrets sealed at
    /// rest with `vault` when given (see [`store`]).
    pub fn open_sealed(
        log: Arc<dyn EventLog>,
        path: impl AsRef<Path>,
        options: Options,
        vault: Option<Arc<threshold_privacy::Vault>>,
    ) -> Result<Self> {
        let store = Arc::new(store::Store::open_sealed(path, vault)?);
        let sender = client::Sender::new(options.policy, options.timeout)?;
        Ok(Self {
            ctx: Arc::new(delivery::Ctx {
                log,
                store,
                sender,
                schedule: options.schedule,
                alerts: opentelemetry::global::meter("threshold.webhooks")
                    .u64_counter("threshold.webhook.alerts")
                    .with_description(
                        "Webhook endpoints disabled or held with an alert to the partner and the carrier, \
                         by reason (gone: answered 410; exhausted: failed over the whole retry schedule; \
                         held: the partner holds no credential)",
                    )
                    .build(),
                credentials: std::sync::OnceLock::new(),
            }),
            tasks: Mutex::default(),
        })
    }

    /// Delivers to a partner's endpoints only while `credentials` hold a
    /// partner credential of that partner itself (see [`delivery`]):
    /// revoking a partner's last credential stops its webhooks as it ends
    /// its subscriptions. Set once; a second call changes nothing.
    #[must_use]
    pub fn with_credentials(self, credentials: Arc<dyn threshold_auth::CredentialStore>) -> Self {
        let _ = self.ctx.credentials.set(credentials);
        self
    }

    /// Starts delivering to every active endpoint, each from its durable
    /// position.
    pub async fn start(&self) -> Result<()> {
        for ep in self.ctx.store.all()? {
            let id = ep.id.clone();
            self.restart(&id, Some(ep)).await;
        }
        Ok(())
    }

    /// How many endpoints are being delivered to now.
    pub async fn delivering(&self) -> usize {
        self.tasks.lock().await.len()
    }

    /// Stops every delivery (each resumes from its position at the next start).
    pub async fn stop(&self) {
        let mut tasks = self.tasks.lock().await;
        for (_, t) in tasks.drain() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Stops `id`'s delivery, and starts it again from `ep` if active.
    async fn restart(&self, id: &str, ep: Option<Endpoint>) {
        let mut tasks = self.tasks.lock().await;
        stop_task(&mut tasks, id).await;
        if let Some(ep) = ep.filter(|e| e.state == State::Active) {
            tasks.insert(
                id.to_owned(),
                tokio::spawn(delivery::run(Arc::clone(&self.ctx), ep)),
            );
        }
    }

    /// Starts `id`'s delivery again as the store has the endpoint now. The
    /// endpoint is read under the tasks' lock, which [`Webhooks::delete`]
    /// holds from its check to its delete: a resume or replay racing a
    /// delete finds the endpoint gone, and starts no task for it.
    async fn restart_from_store(&self, tenant: &str, id: &str) -> Result<Endpoint> {
        let mut tasks = self.tasks.lock().await;
        let ep = self.ctx.store.get(tenant, id)?;
        stop_task(&mut tasks, id).await;
        if ep.state == State::Active {
            tasks.insert(
                id.to_owned(),
                tokio::spawn(delivery::run(Arc::clone(&self.ctx), ep.clone())),
            );
        }
        Ok(ep)
    }

    /// Registers `url` for `tenant`'s outcomes of `kinds` (every kind when
    /// empty); returns the endpoint and its signing secret.
    pub async fn add(
        &self,
        tenant: &str,
        url: &str,
        kinds: &[String],
        start: Start,
    ) -> Result<(Endpoint, Secret)> {
        if tenant.is_empty() || tenant == "*" {
            return Err(Error::Invalid(
                "tenant: an endpoint belongs to one partner".into(),
            ));
        }
        self.ctx.sender.policy().check_url(url)?;
        let kinds: Vec<String> = if kinds.is_empty() {
            payload::KINDS.iter().map(|k| (*k).to_owned()).collect()
        } else {
            for k in kinds {
                if !payload::KINDS.contains(&k.as_str()) {
                    return Err(Error::Invalid(format!(
                        "kinds: {k:?} is not one of {}",
                        payload::KINDS.join(", ")
                    )));
                }
            }
            kinds.to_vec()
        };
        let cursor = match start {
            Start::Now => self.ctx.log.head().await?.0,
            Start::After(c) => c,
        };
        let (ep, secret) = self
            .ctx
            .store
            .add(tenant, url, &kinds, cursor, Utc::now())?;
        self.restart(&ep.id, Some(ep.clone())).await;
        Ok((ep, secret))
    }

    /// `tenant`'s endpoints.
    pub fn list(&self, tenant: &str) -> Result<Vec<Endpoint>> {
        self.ctx.store.list(tenant)
    }

    /// `tenant`'s endpoint `id`.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Endpoint> {
        self.ctx.store.get(tenant, id)
    }

    /// Pauses `tenant`'s endpoint `id`: its events wait at its position.
    pub async fn pause(&self, tenant: &str, id: &str) -> Result<Endpoint> {
        self.ctx
            .store
            .set_state(tenant, id, State::Paused, "paused")?;
        self.restart_from_store(tenant, id).await
    }

    /// Resumes `tenant`'s paused or disabled endpoint `id` from its position.
    pub async fn resume(&self, tenant: &str, id: &str) -> Result<Endpoint> {
        self.ctx.store.set_state(tenant, id, State::Active, "")?;
        self.restart_from_store(tenant, id).await
    }

    /// Deletes `tenant`'s endpoint `id`.
    pub async fn delete(&self, tenant: &str, id: &str) -> Result<()> {
        // Checked, stopped and deleted under the tasks' lock: nothing starts
        // it again in between (see `restart_from_store`).
        let mut tasks = self.tasks.lock().await;
        self.ctx.store.get(tenant, id)?;
        stop_task(&mut tasks, id).await;
        self.ctx.store.delete(tenant, id)
    }

    /// A new signing secret for `tenant`'s endpoint `id`; the old ones
    /// keep signing too for `overlap`.
    pub fn rotate(&self, tenant: &str, id: &str, overlap: Duration) -> Result<Secret> {
        let overlap = chrono::Duration::from_std(overlap)
            .map_err(|_| Error::Invalid("overlap: too long".into()))?;
        if overlap > chrono::Duration::days(30) {
            return Err(Error::Invalid("overlap: at most 30 days".into()));
        }
        self.ctx.store.rotate(tenant, id, overlap, Utc::now())
    }

    /// Redelivers to `tenant`'s endpoint `id` everything of its partner
    /// after log position `cursor`. Only this endpoint is affected.
    pub async fn replay_from(&self, tenant: &str, id: &str, cursor: u64) -> Result<u64> {
        self.ctx.store.get(tenant, id)?;
        // Stopped first, so its task cannot move the position on after.
        self.restart(id, None).await;
        let to = self.ctx.store.rewind(tenant, id, cursor)?;
        self.restart_from_store(tenant, id).await?;
        Ok(to)
    }

    /// Redelivers to `tenant`'s endpoint `id` everything of its partner
    /// recorded at or after `since`; returns the cursor it replays after.
    pub async fn replay_since(&self, tenant: &str, id: &str, since: DateTime<Utc>) -> Result<u64> {
        self.ctx.store.get(tenant, id)?;
        let cursor = self.position_at(since).await?;
        self.replay_from(tenant, id, cursor).await
    }

    /// The last position recorded before `since`. The log is recorded in
    /// time order, so this is a binary search of single-event reads: a
    /// partner's replay costs O(log n) reads, not a scan of the log.
    async fn position_at(&self, since: DateTime<Utc>) -> Result<u64> {
        let head = self.ctx.log.head().await?.0;
        // The first position recorded at or after `since` is in lo..=hi;
        // hi = head + 1 means none is.
        let (mut lo, mut hi) = (1, head + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.ctx.log.read_all(Position(mid - 1), 1).await?.first() {
                Some(e) if e.recorded_at < since => lo = e.position.0 + 1,
                _ => hi = mid,
            }
        }
        Ok(lo - 1)
    }

    /// Up to `max` (at most 1000) attempts on `tenant`'s endpoint `id`
    /// after sequence `after`.
    pub fn attempts(
        &self,
        tenant: &str,
        id: &str,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Attempt)>> {
        self.ctx
            .store
            .attempts(tenant, id, after, max.min(MAX_PAGE))
    }

    /// Up to `max` (at most 1000) alerts raised for `tenant`'s endpoints
    /// (every partner's for `None`, the carrier) after sequence `after`,
    /// oldest first, with their sequence.
    pub fn alerts(
        &self,
        tenant: Option<&str>,
        after: u64,
        max: usize,
    ) -> Result<Vec<(u64, Alert)>> {
        self.ctx.store.alerts(tenant, after, max.min(MAX_PAGE))
    }
}

/// Stops `id`'s delivery task, if it runs, and waits for it to end.
async fn stop_task(tasks: &mut HashMap<String, JoinHandle<()>>, id: &str) {
    if let Some(t) = tasks.remove(id) {
        t.abort();
        let _ = t.await;
    }
}
