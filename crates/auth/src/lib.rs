//! Who may do what. Every gRPC call carries a bearer token; the token names
//! a [`Principal`]: a role (planner, handheld, resident, lock vendor,
//! analyst, partner) and a tenant within it (the depot a planner plans, the
//! driver a handheld belongs to, the resident, the lock vendor, the partner
//! retailer; `*` for every tenant of the role). Each RPC checks both.
//!
//! Credentials are kept in a [`CredentialStore`], as SHA-256 hashes of the
//! tokens: a copy of the store hands out no working token. A credential
//! lasts until revoked, or until its expiry ([`Credential::expiring_at`]);
//! either way what it holds open ends with it ([`Standing::lapse`]). On one machine
//! the store is [`FileCredentials`], `DIR/credentials.json`; processes on
//! many machines share one over the network (on Kafka, a compacted topic:
//! `threshold_server::KafkaCredentials`). The
//! first `threshold serve` on an empty data directory creates one local
//! credential per role (tenant `*`) and writes their tokens, readable by the
//! owner only, to `DIR/local-tokens.json`, so the CLI and `make run` work
//! with no manual step. A deployment deletes that file and hands out tokens
//! of its own (`threshold credentials add`).
//!
//! Both files are written readable and writable by the owner only (0600 on
//! unix): the hashes do not open anything, but which names, roles and
//! tenants exist is the deployment's business, and the local tokens are
//! working credentials. [`ensure_private_dir`] makes a data directory that
//! only its owner can enter (0700), for the server to call on its data
//! directory before it writes anything there.
//!
//! [`AuthLayer`] authenticates every request on a server and hands the
//! principal to the services in the request's extensions; [`require`] is
//! the check each RPC makes. [`Bearer`] puts a token on a client's calls.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::task::{Context, Poll};

use chrono::{DateTime, Utc};
use rand::RngCore;

mod quota;
mod store;
pub use quota::{Full, Place, Quota};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
pub use store::{CredentialStore, FileCredentials, StoreFuture};
use tonic::Status;

/// The file credentials (token hashes) live in, inside the data directory.
pub const CREDENTIALS_FILE: &str = "credentials.json";
/// The file the local credentials' tokens are written to on a first serve.
pub const LOCAL_TOKENS_FILE: &str = "local-tokens.json";
/// The tenant that stands for every tenant of a role.
pub const ANY_TENANT: &str = "*";

/// Why credentials could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what this build writes.
    #[error("{path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A credential asked for cannot be made.
    #[error("{0}")]
    Invalid(String),
    /// The shared store could not be read or written.
    #[error("{0}")]
    Store(String),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a credential's holder is to the carrier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Loads manifests and plans routes; tenant: a depot.
    Planner,
    /// A driver's handheld; tenant: the driver.
    Handheld,
    /// Issues and revokes grants for their home; tenant: the resident ref.
    Resident,
    /// A smart-lock vendor's cloud, speaking for its locks and cameras;
    /// tenant: the vendor.
    LockVendor,
    /// Reads reports and the carrier's full outcome feed; tenant: `*`.
    Analyst,
    /// A partner retailer following its own parcels; tenant: the partner.
    Partner,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [
        Role::Planner,
        Role::Handheld,
        Role::Resident,
        Role::LockVendor,
        Role::Analyst,
        Role::Partner,
    ];

    /// `lock_vendor`, as files and the CLI spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Planner => "planner",
            Role::Handheld => "handheld",
            Role::Resident => "resident",
            Role::LockVendor => "lock_vendor",
            Role::Analyst => "analyst",
            Role::Partner => "partner",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "{s:?} is not a role: {}",
                    Role::ALL.map(Role::as_str).join(", ")
                )
            })
    }
}

/// Who a token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The credential's name, for logs and audits.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant within the role, or [`ANY_TENANT`].
    pub tenant: String,
}

impl Principal {
    /// Whether it may follow a parcel of `partner`, due at `depot` in
    /// `country` (a country code): the partner, the depot's planner, an
    /// analyst of the country (or of every one); no other role.
    pub fn may_follow_parcel(&self, partner: &str, depot: &str, country: &str) -> bool {
        match self.role {
            Role::Partner => self.covers(partner),
            Role::Planner => self.covers(depot),
            Role::Analyst => self.covers(country),
            Role::Handheld | Role::Resident | Role::LockVendor => false,
        }
    }

    /// Whether it may act for `tenant`.
    pub fn covers(&self, tenant: &str) -> bool {
        self.tenant == ANY_TENANT || self.tenant == tenant
    }

    /// `PERMISSION_DENIED` unless it may act for `tenant`; `what` names it.
    pub fn check_tenant(&self, what: &str, tenant: &str) -> Result<(), Status> {
        if self.covers(tenant) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "{} {:?} acts for {:?}, not for {what} {tenant:?}",
                self.role, self.name, self.tenant
            )))
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    credentials: Vec<Credential>,
}

/// One credential as a store keeps it: whom it names, and the SHA-256 of
/// its token (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    /// Its name, unique in its store.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its tenant within the role, or [`ANY_TENANT`].
    pub tenant: String,
    /// SHA-256 of the token, lowercase hex.
    pub token_sha256: String,
    /// When its token stops opening anything (RFC 3339 in the store);
    /// `None`: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "rfc3339")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `Option<DateTime<Utc>>` as an RFC 3339 string, as credentials files
/// and the credentials topic keep it.
mod rfc3339 {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub(super) fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match at {
            Some(at) => s.serialize_some(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| {
                DateTime::parse_from_rfc3339(&text)
                    .map(|at| at.with_timezone(&Utc))
                    .map_err(|e| D::Error::custom(format!("expires_at {text:?}: {e}")))
            })
            .transpose()
    }
}

impl Credential {
    /// A new credential named `name` and its token: the only time the
    /// token is seen.
    pub fn new(name: &str, role: Role, tenant: &str) -> Result<(Self, String)> {
        if name.trim().is_empty() || tenant.trim().is_empty() {
            return Err(Error::Invalid(
                "a credential needs a name and a tenant".into(),
            ));
        }
        if name.len() > 128 || tenant.len() > 128 {
            return Err(Error::Invalid(
                "a credential's name and tenant are at most 128 bytes".into(),
            ));
        }
        let token = new_token();
        Ok((
            Self {
                name: name.to_owned(),
                role,
                tenant: tenant.to_owned(),
                token_sha256: hash(&token),
                expires_at: None,
            },
            token,
        ))
    }

    /// The same credential, its token refused from `at` on.
    pub fn expiring_at(self, at: DateTime<Utc>) -> Self {
        Self {
            expires_at: Some(at),
            ..self
        }
    }
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn read(path: &Path) -> Result<Option<File>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Malformed {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates `dir` (and any missing parent) so that only its owner may list
/// or enter it: 0700 on unix. A directory that exists already and is open
/// to its group or others is narrowed to 0700; one that is already private
/// is left as it is. Elsewhere than unix it only creates the directory.
///
/// The data directory holds the log, the vault and the credentials; each
/// file is private on its own, and a private directory also hides which
/// files exist and keeps others from planting files in it.
pub fn ensure_private_dir(dir: impl AsRef<Path>) -> Result<()> {
    let dir = dir.as_ref();
    let io = |source| Error::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(io)?;
        let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(io)?;
    Ok(())
}

/// Writes `bytes` to `path` whole or not at all, readable and writable by
/// the owner only. A missing directory is created owner-only too.
fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        ensure_private_dir(dir)?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    use std::io::Write;
    let file = options.open(&tmp).map_err(io)?;
    // The mode above applies only when the file is created: a temporary
    // file left behind by an older build keeps its mode unless narrowed.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io)?;
    }
    let mut file = file;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io)
}

fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A store's credentials, by token hash.
#[derive(Debug, Default)]
pub struct Credentials {
    by_hash: HashMap<String, Held>,
}

/// One credential as a server holds it: whom its token names, and until
/// when.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    principal: Principal,
    expires_at: Option<DateTime<Utc>>,
}

impl Held {
    fn open_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|at| now < at)
    }
}

impl Credentials {
    /// The credentials of `list`.
    pub fn of(list: impl IntoIterator<Item = Credential>) -> Self {
        let by_hash = list
            .into_iter()
            .map(|e| {
                (
                    e.token_sha256,
                    Held {
                        principal: Principal {
                            name: e.name,
                            role: e.role,
                            tenant: e.tenant,
                        },
                        expires_at: e.expires_at,
                    },
                )
            })
            .collect();
        Self { by_hash }
    }

    /// The credentials in `dir` (none if the file does not exist).
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(CREDENTIALS_FILE);
        Ok(Self::of(read(&path)?.unwrap_or_default().credentials))
    }

    /// Makes a new token for `name` with `role` and `tenant`, stores its hash
    /// in `dir`, and returns the token: the only time it is seen.
    pub fn add(dir: impl AsRef<Path>, name: &str, role: Role, tenant: &str) -> Result<String> {
        let (credential, token) = Credential::new(name, role, tenant)?;
        FileCredentials::new(dir).insert(credential)?;
        Ok(token)
    }

    /// Who a token names, unless its credential has expired.
    pub fn authenticate(&self, token: &str) -> Option<&Principal> {
        self.by_hash
            .get(&hash(token))
            .filter(|h| h.open_at(Utc::now()))
            .map(|h| &h.principal)
    }

    /// Whom the credentials name, by name, expired ones too.
    pub fn principals(&self) -> Vec<&Principal> {
        self.listed().into_iter().map(|(p, _)| p).collect()
    }

    /// Whom the credentials name and until when, by name, expired ones too.
    pub fn listed(&self) -> Vec<(&Principal, Option<DateTime<Utc>>)> {
        let mut all: Vec<_> = self
            .by_hash
            .values()
            .map(|h| (&h.principal, h.expires_at))
            .collect();
        all.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        all
    }

    /// Whether a credential is named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.by_hash.values().any(|h| h.principal.name == name)
    }

    /// Whether an unexpired credential of `role` names `tenant` itself: one
    /// of every tenant (`*`, the carrier's own) does not count.
    pub fn held_by(&self, role: Role, tenant: &str) -> bool {
        let now = Utc::now();
        self.by_hash
            .values()
            .any(|h| h.principal.role == role && h.principal.tenant == tenant && h.open_at(now))
    }
}

/// The tokens of the local credentials a first serve creates, by role.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LocalTokens(BTreeMap<Role, String>);

impl LocalTokens {
    /// On a data directory without credentials, creates one local credential
    /// per role for every tenant and writes their tokens to
    /// [`LOCAL_TOKENS_FILE`] (owner-only). Returns whether it did.
    pub fn ensure(dir: impl AsRef<Path>) -> Result<bool> {
        let dir = dir.as_ref();
        if dir.join(CREDENTIALS_FILE).exists() {
            return Ok(false);
        }
        let mut tokens = BTreeMap::new();
        for role in Role::ALL {
            let token = Credentials::add(dir, &format!("local-{role}"), role, ANY_TENANT)?;
            tokens.insert(role, token);
        }
        let path = dir.join(LOCAL_TOKENS_FILE);
        let text =
            serde_json::to_vec_pretty(&LocalTokens(tokens)).map_err(|e| Error::Malformed {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        write(&path, &text)?;
        Ok(true)
    }

    /// Local credentials in a shared `store`: one per role for every
    /// tenant, named `PREFIX-ROLE` (replacing credentials of those names),
    /// their tokens written to [`LOCAL_TOKENS_FILE`] in `dir` (owner-only),
    /// for the CLI and simulations run with `--data DIR`. Tokens already in
    /// `dir` that all still authenticate in `store` are kept.
    pub async fn make_in(
        store: &dyn CredentialStore,
        dir: impl AsRef<Path>,
        prefix: &str,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let path = dir.join(LOCAL_TOKENS_FILE);
        if let Some(tokens) = read_tokens(&path)? {
            let current = store.current()?;
            if Role::ALL.iter().all(|r| {
                tokens
                    .token(*r)
                    .and_then(|t| current.authenticate(t))
                    .is_some_and(|p| p.role == *r)
            }) {
                return Ok(tokens);
            }
        }
        let mut tokens = BTreeMap::new();
        for role in Role::ALL {
            let name = format!("{prefix}-{role}");
            let (credential, token) = Credential::new(&name, role, ANY_TENANT)?;
            store.revoke(&name).await?;
            store.add(credential).await?;
            tokens.insert(role, token);
        }
        let tokens = LocalTokens(tokens);
        let text = serde_json::to_vec_pretty(&tokens).map_err(|e| Error::Malformed {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write(&path, &text)?;
        Ok(tokens)
    }

    /// The local tokens written to `dir` by a first serve.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let path = dir.as_ref().join(LOCAL_TOKENS_FILE);
        read_tokens(&path)?.ok_or_else(|| Error::Io {
            path,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no local tokens: start `threshold serve` on this data directory first, \
                 or give --token",
            ),
        })
    }

    /// The token of `role`.
    pub fn token(&self, role: Role) -> Option<&str> {
        self.0.get(&role).map(String::as_str)
    }

    /// `channel` with the token of `role` on every call.
    pub fn channel(&self, channel: tonic::transport::Channel, role: Role) -> Result<Authed> {
        authed(channel, self.token(role))
    }
}

fn read_tokens(path: &Path) -> Result<Option<LocalTokens>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::Malformed {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A server's view of its credentials: asked on every call, so a
/// credential added or revoked while it runs counts at once (or, in a
/// shared store, as soon as the store says so).
#[derive(Clone)]
pub struct Authenticator {
    store: Arc<dyn CredentialStore>,
}

impl Authenticator {
    /// Credentials of the data directory `dir` ([`FileCredentials`]).
    pub fn new(dir: impl AsRef<Path>) -> Self {
        Self::with_store(Arc::new(FileCredentials::new(dir)))
    }

    /// Credentials of `store`.
    pub fn with_store(store: Arc<dyn CredentialStore>) -> Self {
        Self { store }
    }

    /// Its store.
    pub fn store(&self) -> &Arc<dyn CredentialStore> {
        &self.store
    }

    fn credentials(&self) -> Result<Arc<Credentials>, Status> {
        self.store.current().map_err(|e| {
            // The store and why go to the server's log; the caller is told
            // only that the server's credentials are unreadable.
            tracing::error!(error = %e, store = %self.store.describe(), "credentials");
            Status::internal("the server's credentials could not be read")
        })
    }

    /// The principal an `authorization: Bearer <token>` header names, or
    /// `UNAUTHENTICATED` saying what is wrong.
    pub fn principal(&self, header: Option<&[u8]>) -> Result<Principal, Status> {
        self.standing(header).map(|s| s.principal)
    }

    /// [`Authenticator::principal`], with what asks later whether it still
    /// holds.
    pub fn standing(&self, header: Option<&[u8]>) -> Result<Standing, Status> {
        let header = header.ok_or_else(|| {
            Status::unauthenticated("no credentials: send authorization: Bearer <token>")
        })?;
        let token = std::str::from_utf8(header)
            .ok()
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Status::unauthenticated("authorization must be \"Bearer <token>\""))?;
        let token_sha256 = hash(token);
        let held = self
            .credentials()?
            .by_hash
            .get(&token_sha256)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if let Some(lapse) = held.lapse_at(Utc::now()) {
            return Err(Status::unauthenticated(format!(
                "credential {:?} {lapse}",
                held.principal.name
            )));
        }
        Ok(Standing {
            auth: self.clone(),
            token_sha256,
            principal: held.principal,
            expires_at: held.expires_at,
        })
    }
}

/// Why a credential that held no longer does; shown as "is revoked" or
/// "expired at 2026-12-31T23:00:00Z", to follow "the credential …".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lapse {
    /// Removed from the store, or its token given to another.
    Revoked,
    /// Past its expiry.
    Expired(DateTime<Utc>),
}

impl std::fmt::Display for Lapse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lapse::Revoked => f.write_str("is revoked"),
            Lapse::Expired(at) => write!(
                f,
                "expired at {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }
    }
}

impl Held {
    fn lapse_at(&self, now: DateTime<Utc>) -> Option<Lapse> {
        (!self.open_at(now)).then(|| Lapse::Expired(self.expires_at.unwrap_or(now)))
    }
}

/// How often an open stream asks whether its credential still holds.
pub const STANDING_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the credential a call was authenticated with still holds, asked
/// again later: a stream open for hours asks it now and then, so a
/// credential revoked (or its token replaced) while the stream is open
/// ends it. [`AuthLayer`] puts one in every authenticated request's
/// extensions, beside its [`Principal`].
#[derive(Clone)]
pub struct Standing {
    auth: Authenticator,
    token_sha256: String,
    principal: Principal,
    /// The expiry it was authenticated with: it lapses then even while the
    /// store cannot be read.
    expires_at: Option<DateTime<Utc>>,
}

impl Standing {
    /// The standing of the credential the call of `request` was made with.
    pub fn of<T>(request: &tonic::Request<T>) -> Option<Standing> {
        request.extensions().get::<Standing>().cloned()
    }

    /// Whether the same token still names the same principal and has not
    /// expired. Credentials that cannot be read now count as holding: the
    /// server's log says why, and every new call is refused until they can
    /// be.
    pub fn holds(&self) -> bool {
        self.lapse().is_none()
    }

    /// Why the credential no longer holds ("is revoked", "expired at …"),
    /// or `None` while it does.
    pub fn lapse(&self) -> Option<Lapse> {
        let now = Utc::now();
        if let Some(at) = self.expires_at.filter(|at| now >= *at) {
            return Some(Lapse::Expired(at));
        }
        match self.auth.store.current() {
            Ok(c) => match c.by_hash.get(&self.token_sha256) {
                Some(h) if h.principal == self.principal => h.lapse_at(now),
                _ => Some(Lapse::Revoked),
            },
            Err(e) => {
                tracing::warn!(error = %e, "credentials unreadable; an open stream's credential is taken as holding");
                None
            }
        }
    }

    /// The principal it was made for.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }
}

impl std::fmt::Debug for Standing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Standing")
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// Calls that need no credentials: health checks and reflection (the
/// schema only).
fn open_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.") || path.starts_with("/grpc.reflection.")
}

/// A tower layer that authenticates every call on a server: a call without
/// a known token is answered `UNAUTHENTICATED` before any service sees it;
/// the others carry their [`Principal`] in the request's extensions.
#[derive(Clone)]
pub struct AuthLayer(Authenticator);

impl AuthLayer {
    /// Authenticates against `auth`.
    pub fn new(auth: Authenticator) -> Self {
        Self(auth)
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Authenticated {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Authenticator,
}

type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Authenticated<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if !open_path(request.uri().path()) {
            let header = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match self.auth.standing(header) {
                Ok(standing) => {
                    request.extensions_mut().insert(standing.principal.clone());
                    request.extensions_mut().insert(standing);
                }
                Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
            }
        }
        // The clone is ready only once polled; the one polled goes in.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(inner.call(request))
    }
}

/// The caller of `request`, if its role is one of `roles`: `UNAUTHENTICATED`
/// without credentials, `PERMISSION_DENIED` for another role.
pub fn require<'a, T>(
    request: &'a tonic::Request<T>,
    roles: &[Role],
) -> Result<&'a Principal, Status> {
    let principal = request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| Status::unauthenticated("no credentials"))?;
    if roles.contains(&principal.role) {
        Ok(principal)
    } else {
        Err(Status::permission_denied(format!(
            "{} {:?} may not call this; it takes {}",
            principal.role,
            principal.name,
            roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" or ")
        )))
    }
}

/// Puts `authorization: Bearer <token>` on every call of a client.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl Bearer {
    /// A token's header; `None` sends none.
    pub fn new(token: Option<&str>) -> Result<Self> {
        token
            .map(|t| {
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Error::Invalid("a token is printable ASCII".into()))
            })
            .transpose()
            .map(Self)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// A channel whose calls carry a token.
pub type Authed =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>;

/// `channel` with `token` on every call.
pub fn authed(channel: tonic::transport::Channel, token: Option<&str>) -> Result<Authed> {
    Ok(tonic::service::interceptor::InterceptedService::new(
        channel,
        Bearer::new(token)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parcel_is_followed_by_its_partner_its_depot_s_planner_and_its_country_s_analyst() {
        let who = |role, tenant: &str| Principal {
            name: "n".into(),
            role,
            tenant: tenant.into(),
        };
        let may = |p: &Principal| p.may_follow_parcel("nordshop", "STO-1", "SE");
        assert!(may(&who(Role::Partner, "nordshop")));
        assert!(!may(&who(Role::Partner, "fjallgear")));
        assert!(may(&who(Role::Planner, "STO-1")));
        assert!(may(&who(Role::Planner, ANY_TENANT)));
        assert!(!may(&who(Role::Planner, "GBG-1")));
        assert!(may(&who(Role::Analyst, ANY_TENANT)));
        assert!(may(&who(Role::Analyst, "SE")));
        assert!(!may(&who(Role::Analyst, "NO")));
        for role in [Role::Handheld, Role::Resident, Role::LockVendor] {
            assert!(!may(&who(role, ANY_TENANT)), "{role:?}");
        }
    }

    #[test]
    fn tokens_name_their_principal_and_only_hashes_are_stored() {
        let dir = tempfile::tempdir().unwrap();
        let a = Credentials::add(dir.path(), "nordshop", Role::Partner, "nordshop").unwrap();
        let b = Credentials::add(dir.path(), "lock-cloud", Role::LockVendor, "nordlock").unwrap();
        assert_ne!(a, b);
        let c = Credentials::load(dir.path()).unwrap();
        let p = c.authenticate(&a).unwrap();
        assert_eq!((p.role, p.tenant.as_str()), (Role::Partner, "nordshop"));
        assert!(p.covers("nordshop") && !p.covers("fjallgear"));
        assert_eq!(c.authenticate(&b).unwrap().role, Role::LockVendor);
        assert_eq!(c.authenticate("guess"), None);
        assert!(c.held_by(Role::Partner, "nordshop"));
        assert!(!c.held_by(Role::Partner, "fjallgear"), "another partner's");
        assert!(!c.held_by(Role::Planner, "nordshop"), "another role's");
        let stored = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).unwrap();
        assert!(!stored.contains(&a), "the token itself is not stored");
        assert!(stored.contains(&hash(&a)));
        let again = Credentials::add(dir.path(), "nordshop", Role::Partner, "nordshop");
        assert!(again.unwrap_err().to_string().contains("exists already"));
    }

    #[tokio::test]
    async fn a_revoked_credential_is_refused_by_a_running_authenticator_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let token = Credentials::add(dir.path(), "p1", Role::Planner, "STO-1").unwrap();
        let other = Credentials::add(dir.path(), "p2", Role::Planner, "STO-2").unwrap();
        let auth = Authenticator::new(dir.path());
        let header = |t: &str| format!("Bearer {t}");
        assert_eq!(
            auth.principal(Some(header(&token).as_bytes()))
                .unwrap()
                .name,
            "p1"
        );
        assert!(auth.store().revoke("p1").await.unwrap());
        assert!(!auth.store().revoke("p1").await.unwrap(), "only once");
        let refused = auth.principal(Some(header(&token).as_bytes())).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            auth.principal(Some(header(&other).as_bytes()))
                .unwrap()
                .name,
            "p2"
        );
        let names: Vec<_> = auth
            .store()
            .current()
            .unwrap()
            .principals()
            .iter()
            .map(|p| p.name.clone())
            .collect();
        assert_eq!(names, ["p2"]);
    }

    #[tokio::test]
    async fn local_tokens_made_in_a_store_are_kept_while_they_authenticate() {
        let store_dir = tempfile::tempdir().unwrap();
        let data = tempfile::tempdir().unwrap();
        let store = FileCredentials::new(store_dir.path());
        let first = LocalTokens::make_in(&store, data.path(), "local-a")
            .await
            .unwrap();
        let current = store.current().unwrap();
        for role in Role::ALL {
            let p = current.authenticate(first.token(role).unwrap()).unwrap();
            assert_eq!((p.role, p.tenant.as_str()), (role, ANY_TENANT));
            assert_eq!(p.name, format!("local-a-{role}"));
        }
        let again = LocalTokens::make_in(&store, data.path(), "local-a")
            .await
            .unwrap();
        assert_eq!(again.token(Role::Planner), first.token(Role::Planner));
        // One revoked: the set is made again, the old tokens refused.
        assert!(store.revoke("local-a-analyst").await.unwrap());
        let renewed = LocalTokens::make_in(&store, data.path(), "local-a")
            .await
            .unwrap();
        assert_ne!(renewed.token(Role::Planner), first.token(Role::Planner));
        let current = store.current().unwrap();
        assert!(
            current
                .authenticate(first.token(Role::Planner).unwrap())
                .is_none()
        );
        assert_eq!(current.principals().len(), Role::ALL.len());
        assert!(
            !current.held_by(Role::Partner, "nordshop"),
            "one of every tenant is not the partner's own"
        );
    }

    #[test]
    fn a_first_serve_makes_local_credentials_once_readable_by_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(LocalTokens::load(dir.path()).is_err());
        assert!(LocalTokens::ensure(dir.path()).unwrap());
        assert!(!LocalTokens::ensure(dir.path()).unwrap(), "only once");
        let local = LocalTokens::load(dir.path()).unwrap();
        let c = Credentials::load(dir.path()).unwrap();
        for role in Role::ALL {
            let p = c.authenticate(local.token(role).unwrap()).unwrap();
            assert_eq!((p.role, p.tenant.as_str()), (role, ANY_TENANT));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(LOCAL_TOKENS_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    #[test]
    fn credentials_are_readable_by_the_owner_only_also_in_a_new_directory() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        Credentials::add(&dir, "p1", Role::Planner, "STO-1").unwrap();
        assert_eq!(mode(&dir.join(CREDENTIALS_FILE)), 0o600);
        assert_eq!(mode(&dir), 0o700, "a directory the write made");
        // A second write replaces the file: still owner-only.
        Credentials::add(&dir, "p2", Role::Planner, "STO-2").unwrap();
        assert_eq!(mode(&dir.join(CREDENTIALS_FILE)), 0o600);
        // A leftover temporary file of another mode does not leak its mode.
        use std::os::unix::fs::PermissionsExt;
        let tmp = dir.join(CREDENTIALS_FILE).with_extension("json.tmp");
        std::fs::write(&tmp, "").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        Credentials::add(&dir, "p3", Role::Planner, "STO-3").unwrap();
        assert_eq!(mode(&dir.join(CREDENTIALS_FILE)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_private_dir_is_made_owner_only_and_an_open_one_is_narrowed() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&root.path().join("a")), 0o700, "missing parents too");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        // Twice is fine, and a file in the way is an error naming it.
        ensure_private_dir(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, "").unwrap();
        let err = ensure_private_dir(&file).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }

    #[test]
    fn headers_are_checked_and_a_changed_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Authenticator::new(dir.path());
        assert_eq!(
            auth.principal(None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.principal(Some(b"Basic abc")).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        let t = Credentials::add(dir.path(), "p1", Role::Planner, "STO-1").unwrap();
        let header = format!("Bearer {t}");
        let p = auth.principal(Some(header.as_bytes())).unwrap();
        assert_eq!(p.role, Role::Planner);
        // Added while running: seen without a restart.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let t2 = Credentials::add(dir.path(), "a1", Role::Analyst, "*").unwrap();
        let header = format!("Bearer {t2}");
        assert_eq!(
            auth.principal(Some(header.as_bytes())).unwrap().role,
            Role::Analyst
        );
        assert!(auth.principal(Some(b"Bearer nope")).is_err());
    }

    #[tokio::test]
    async fn an_expired_credential_is_refused_says_so_and_ends_what_it_holds_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileCredentials::new(dir.path());
        let now = Utc::now();
        let soon_at = now + chrono::Duration::seconds(2);
        let (soon, soon_token) = Credential::new("soon", Role::Partner, "nordshop").unwrap();
        store.insert(soon.expiring_at(soon_at)).unwrap();
        let (past, past_token) = Credential::new("past", Role::Partner, "fjallgear").unwrap();
        store
            .insert(past.expiring_at(now - chrono::Duration::seconds(1)))
            .unwrap();
        let lasting = Credentials::add(dir.path(), "lasting", Role::Planner, "STO-1").unwrap();
        let auth = Authenticator::new(dir.path());
        let header = |t: &str| format!("Bearer {t}");

        let refused = auth
            .principal(Some(header(&past_token).as_bytes()))
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(
            refused.message().contains("\"past\" expired at 20"),
            "{refused:?}"
        );
        let current = store.current().unwrap();
        assert!(current.authenticate(&past_token).is_none());
        assert!(!current.held_by(Role::Partner, "fjallgear"), "expired");
        assert!(current.held_by(Role::Partner, "nordshop"), "not yet");

        let standing = auth.standing(Some(header(&soon_token).as_bytes())).unwrap();
        assert!(standing.holds());
        // It lapses at its expiry even while the store cannot be read.
        let before = std::fs::read(dir.path().join(CREDENTIALS_FILE)).unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), "{broken").unwrap();
        assert!(
            standing.holds(),
            "unreadable: taken as holding, until its expiry"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2_100)).await;
        assert_eq!(standing.lapse(), Some(Lapse::Expired(soon_at)));
        std::fs::write(dir.path().join(CREDENTIALS_FILE), before).unwrap();
        assert_eq!(standing.lapse(), Some(Lapse::Expired(soon_at)));
        assert!(!standing.holds(), "an open stream's credential lapses");
        assert!(
            auth.principal(Some(header(&soon_token).as_bytes()))
                .is_err()
        );
        assert!(!store.current().unwrap().held_by(Role::Partner, "nordshop"));
        assert!(auth.principal(Some(header(&lasting).as_bytes())).is_ok());

        // Listed with their expiry; a revoked one lapses as revoked.
        let listed: Vec<_> = store
            .current()
            .unwrap()
            .listed()
            .into_iter()
            .map(|(p, at)| (p.name.clone(), at))
            .collect();
        assert_eq!(
            listed,
            [
                ("lasting".to_owned(), None),
                ("past".to_owned(), Some(now - chrono::Duration::seconds(1))),
                ("soon".to_owned(), Some(soon_at)),
            ]
        );
        let other = Credentials::add(dir.path(), "other", Role::Planner, "STO-2").unwrap();
        let standing = auth.standing(Some(header(&other).as_bytes())).unwrap();
        assert!(store.remove("other").unwrap());
        assert_eq!(standing.lapse(), Some(Lapse::Revoked));
    }

    #[test]
    fn an_expiry_is_kept_as_rfc_3339_and_a_credential_without_one_reads_as_before() {
        let dir = tempfile::tempdir().unwrap();
        let at = DateTime::parse_from_rfc3339("2027-03-01T08:00:00+01:00")
            .unwrap()
            .with_timezone(&Utc);
        let (c, _) = Credential::new("p1", Role::Planner, "STO-1").unwrap();
        FileCredentials::new(dir.path())
            .insert(c.expiring_at(at))
            .unwrap();
        Credentials::add(dir.path(), "p2", Role::Planner, "STO-2").unwrap();
        let text = std::fs::read_to_string(dir.path().join(CREDENTIALS_FILE)).unwrap();
        assert!(
            text.contains("\"expires_at\": \"2027-03-01T07:00:00Z\""),
            "{text}"
        );
        assert_eq!(
            text.matches("expires_at").count(),
            1,
            "none when none: {text}"
        );
        let listed = Credentials::load(dir.path()).unwrap();
        assert_eq!(listed.listed()[0].1, Some(at));

        let bad = text.replace("2027-03-01T07:00:00Z", "next spring");
        std::fs::write(dir.path().join(CREDENTIALS_FILE), bad).unwrap();
        let err = Credentials::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(CREDENTIALS_FILE) && err.contains("expires_at \"next spring\""),
            "{err}"
        );
    }

    #[test]
    fn a_broken_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIALS_FILE), "{not json").unwrap();
        let err = Credentials::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(CREDENTIALS_FILE), "{err}");
        assert!("admin".parse::<Role>().unwrap_err().contains("lock_vendor"));
    }
}
