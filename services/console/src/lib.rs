//! The web console: planners see their depot-days' routes on a map, analysts
//! see attempts per parcel as charts, over the same read models the gRPC
//! services answer from, signed in with the same tokens and roles.
//!
//! # Layout
//!
//! - [`Console`]: the HTTP server (an axum [`Router`]) over [`Models`].
//! - `session`: single-use sign-in codes, server-side sessions, CSRF.
//! - `pages`: the HTML pages and their CSV, and who may see which.
//! - `svg`: charts and the map, written as inline SVG on the server.
//! - `map`: the Nordic outlines shipped in `assets/map`.
//!
//! Pages are rendered on the server from the projections; the browser runs
//! no script and fetches nothing but the page (the CSP says so). A planner
//! sees the depots their credential names, an analyst the country theirs
//! names (`*`: all); every other role, and every other depot or country, is
//! refused.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock, RwLockReadGuard};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use threshold_auth::{Authenticator, Principal};
use threshold_log::{EventLog, Position};
use threshold_privacy::Vault;
use threshold_projections::{Attempts, DepotDays, Routes};
use threshold_routing::depot::Fleets;
use tokio::net::TcpListener;

mod map;
mod pages;
mod session;
mod svg;

pub use session::{CODE_TTL, SESSION_TTL};

/// The most a request body may carry: forms only, no uploads yet.
pub const MAX_BODY: usize = 16 * 1024;

/// Why the console could not serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listener failed.
    #[error("console: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The read models pages are made from.
#[derive(Clone, Default)]
pub struct Models {
    /// Attempts per parcel and the cube reports read.
    pub attempts: Arc<RwLock<Attempts>>,
    /// Every route's current plan.
    pub routes: Arc<RwLock<Routes>>,
    /// The parcels of every depot-day, addresses opened with the vault.
    pub depot_days: Arc<RwLock<DepotDays>>,
}

impl Models {
    /// The attempts model, read; a writer's panic leaves it readable.
    pub fn attempts(&self) -> RwLockReadGuard<'_, Attempts> {
        self.attempts.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The routes model, read.
    pub fn routes(&self) -> RwLockReadGuard<'_, Routes> {
        self.routes.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The depot-days model, read.
    pub fn depot_days(&self) -> RwLockReadGuard<'_, DepotDays> {
        self.depot_days.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Models built from `log` and kept following it (call within a tokio
    /// runtime); sealed addresses are opened with `vault` to draw stops.
    pub fn follow(log: Arc<dyn EventLog>, vault: Arc<Vault>) -> Self {
        let models = Models {
            depot_days: Arc::new(RwLock::new(DepotDays::with_vault(vault))),
            ..Models::default()
        };
        fn keep<P: threshold_projections::Projection>(
            log: &Arc<dyn EventLog>,
            model: &Arc<RwLock<P>>,
        ) {
            let (log, model) = (Arc::clone(log), Arc::clone(model));
            tokio::spawn(async move {
                if let Some(e) = threshold_projections::follow(log, model, Position::ORIGIN).await {
                    tracing::error!(error = %e, "console: a projection stopped following the log");
                }
            });
        }
        keep(&log, &models.attempts);
        keep(&log, &models.routes);
        keep(&log, &models.depot_days);
        models
    }
}

/// What a replan changed, as the planning service answers it.
#[derive(Debug, Clone, Default)]
pub struct Replanned {
    /// Vans the new plan uses, of those the depot has.
    pub vans_used: u32,
    /// Vans the depot has.
    pub vans_available: u32,
    /// Routes whose plan changed (new, or a new version).
    pub routes_changed: u32,
    /// Stops still on the van the previous version had them on.
    pub stops_kept_on_van: u32,
    /// Stops now on another van.
    pub stops_moved: u32,
    /// Kilometres driven by the new plan.
    pub km: f64,
    /// Parcels no van could take, with the reason.
    pub unassigned: Vec<(String, String)>,
}

/// Replans a depot-day as a principal: the planning service's PlanDay,
/// asked in-process with the session's principal (it checks the role and
/// depot again).
pub type Replan = Arc<
    dyn Fn(
            Principal,
            String,
            chrono::NaiveDate,
        )
            -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<Replanned, String>> + Send>>
        + Send
        + Sync,
>;

/// What a manifest load did.
#[derive(Debug, Clone, Default)]
pub struct Uploaded {
    /// Its id.
    pub manifest_id: String,
    /// Rows read.
    pub rows: u64,
    /// Rows appended.
    pub accepted: u64,
    /// Rows already in the log as they are.
    pub unchanged: u64,
    /// Each refused row: its line, field and why.
    pub refused: Vec<(u64, String, String)>,
}

/// Loads a manifest as a principal: the manifest service's LoadManifest,
/// asked in-process with the session's principal.
pub type Upload = Arc<
    dyn Fn(
            Principal,
            String,
            Vec<u8>,
        )
            -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<Uploaded, String>> + Send>>
        + Send
        + Sync,
>;

/// The most a manifest upload may carry.
pub const MAX_UPLOAD: usize = 8 * 1024 * 1024;

/// Manifest uploads read at once, in all; each credential reads one at a
/// time (as the manifest service bounds loads, before any byte is read).
pub const MAX_UPLOADS: usize = 4;

/// How long an upload's body may take to arrive.
pub const UPLOAD_READ: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct Inner {
    pub(crate) models: Models,
    pub(crate) replan: Option<Replan>,
    pub(crate) upload: Option<Upload>,
    pub(crate) fleets: Fleets,
    pub(crate) auth: Authenticator,
    pub(crate) sessions: session::Sessions,
    /// Manifest uploads being read now: [`MAX_UPLOADS`] in all, one per
    /// credential.
    pub(crate) uploads: threshold_auth::Quota,
    /// Track and trace, when the process keeps it.
    pub(crate) track: Option<Arc<dyn threshold_projections::TrackStore>>,
}

/// The console: pages over [`Models`], for the credentials `auth` knows.
#[derive(Clone)]
pub struct Console(pub(crate) Arc<Inner>);

impl Console {
    /// A console over `models`, with depot positions and vans from `fleets`,
    /// signing in the tokens `auth` knows.
    pub fn new(models: Models, fleets: Fleets, auth: Authenticator) -> Self {
        Console(Arc::new(Inner {
            models,
            replan: None,
            upload: None,
            fleets,
            auth,
            sessions: session::Sessions::default(),
            uploads: threshold_auth::Quota::new(MAX_UPLOADS, 1),
            track: None,
        }))
    }

    /// The same console, with a manifest upload on depot pages.
    pub fn with_upload(self, upload: Upload) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Inner {
            models: shared.models.clone(),
            replan: shared.replan.clone(),
            upload: None,
            fleets: shared.fleets.clone(),
            auth: shared.auth.clone(),
            sessions: session::Sessions::default(),
            uploads: threshold_auth::Quota::new(MAX_UPLOADS, 1),
            track: shared.track.clone(),
        });
        Console(Arc::new(Inner {
            upload: Some(upload),
            ..inner
        }))
    }

    /// The same console, with a parcel page tracking parcels in `store`.
    pub fn with_track(self, store: Arc<dyn threshold_projections::TrackStore>) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Inner {
            models: shared.models.clone(),
            replan: shared.replan.clone(),
            upload: shared.upload.clone(),
            fleets: shared.fleets.clone(),
            auth: shared.auth.clone(),
            sessions: session::Sessions::default(),
            uploads: threshold_auth::Quota::new(MAX_UPLOADS, 1),
            track: None,
        });
        Console(Arc::new(Inner {
            track: Some(store),
            ..inner
        }))
    }

    /// The same console, with a replan action on depot pages.
    pub fn with_replan(self, replan: Replan) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|shared| Inner {
            models: shared.models.clone(),
            replan: shared.replan.clone(),
            upload: shared.upload.clone(),
            fleets: shared.fleets.clone(),
            auth: shared.auth.clone(),
            sessions: session::Sessions::default(),
            uploads: threshold_auth::Quota::new(MAX_UPLOADS, 1),
            track: shared.track.clone(),
        });
        Console(Arc::new(Inner {
            replan: Some(replan),
            ..inner
        }))
    }

    /// The path of a one-time sign-in link for the holder of `standing`:
    /// valid once, for [`CODE_TTL`], and its session as long as the
    /// credential holds.
    pub(crate) fn sign_in_path(&self, standing: threshold_auth::Standing) -> String {
        format!("/signin?code={}", self.0.sessions.issue_code(standing))
    }

    /// A one-time sign-in path for whoever `token` names; `None` for an
    /// unknown token.
    pub fn sign_in_path_for_token(&self, token: &str) -> Option<String> {
        let standing = self
            .0
            .auth
            .standing(Some(format!("Bearer {token}").as_bytes()))
            .ok()?;
        Some(self.sign_in_path(standing))
    }

    /// The HTTP routes.
    pub fn router(&self) -> Router {
        pages::routes()
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(self.clone())
    }

    /// Serves on `listener` until `stop` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(stop)
            .await?;
        Ok(())
    }

    /// Serves on `listener` in the background until `stop` resolves; the
    /// address it serves on is returned.
    pub fn spawn(
        self,
        listener: TcpListener,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(SocketAddr, tokio::task::JoinHandle<Result<()>>)> {
        let addr = listener.local_addr()?;
        Ok((addr, tokio::spawn(self.serve(listener, stop))))
    }
}

/// Text made safe for HTML, in elements and quoted attributes.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
