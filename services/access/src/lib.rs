//! AccessService: in-home grants, unlock decisions, lock and camera facts.
//!
//! Grant and home commands are decided by their aggregates on the history
//! the log holds and appended with the expected version; a concurrent
//! change makes the append conflict and the command is decided again on the
//! new history. So per grant there is one order of events, and a revoke and
//! an unlock never both win out of order (guarantee 7). The server's clock
//! decides windows; every authorization carries a fresh nonce.
//!
//! A server started for a simulation runs on the simulator's clock instead:
//! each request then carries the simulated time in
//! [`threshold_api::SIMULATED_TIME_HEADER`], and a request without it is
//! refused. A server on the real clock refuses that header outright, so a
//! client can never bring its own time to a real one.
//!
//! # An entry, step by step
//!
//! 0. The home is enrolled and claimed, once. Its lock's vendor registers
//!    the lock (`RecordDeviceEvent` with `LockRegistered`, signed by the key
//!    it registers) with the home's postal address: the server finds the
//!    household living there in the vault, as the manifest service does
//!    for a parcel's address, keeps the address only sealed, and answers
//!    with a one-time claim code for the lock to show. The household claims
//!    the home with it (`ClaimHome`); five wrong codes void it.
//! 1. The resident who claimed the home issues a grant (`IssueGrant`) for
//!    parcels addressed to the home's household: the home's and the
//!    parcels' streams are read, and the domain
//!    ([`threshold_domain::enrolment::binding_refusal`]) refuses anything
//!    else, naming the field and nothing of another party's.
//! 2. At the door the driver scans the parcel (an `AttemptStarted` through
//!    the handheld service) and asks `AuthorizeUnlock` with the route and
//!    the handheld's position. The server checks the grant (revoked, used,
//!    expired, window, scoped driver) and then the other streams: the route
//!    carries the parcel and is the driver's, the driver scanned it, the
//!    position is inside the geofence, the camera's heartbeat is fresh and it
//!    records, and no household condition blocks. Every refusal is recorded
//!    on the grant with its reason and details, and answered with the
//!    reason, a fixed explanation of it (nothing of the grant's: see
//!    [`threshold_domain::grant::refusal_explanation`]) and the grant's
//!    fallback.
//! 3. The home's lock presents the nonce (`RedeemUnlock`, signed with the
//!    home's device key) and opens only on a yes. A nonce opens once; a
//!    revoke recorded meanwhile, or an authorization run out, refuses it.
//! 4. The lock reports what happened (`RecordDeviceEvent`, signed): unlocked,
//!    relocked, the handle checked. An unsigned or badly signed report is
//!    refused, never stored; a signed one dated further than
//!    [`threshold_domain::home::DEVICE_CLOCK_SKEW`] from the server's clock
//!    is refused and recorded as an alert, and one dated ahead is stored at
//!    the server's time. An opening under no grant, on a nonce not redeemed
//!    or on one already opened on raises an alert. A watcher ([`Access::watch`]) raises an alert
//!    when a door stays unlocked longer than [`RELOCK_WITHIN`] or its camera
//!    falls silent while it is open; the handheld service refuses to close
//!    the attempt as delivered in-home before the lock reported the relock.
//! 5. The resident gets a receipt (`GetReceipt`) holding the head of the
//!    home's audit chain.
//!
//! # Layout
//!
//! Each file holds one reason to change and says what it must never do.
//! This one holds only the module map and the [`Access`] type with its
//! constructors; it must never grow an RPC or a rule.
//!
//! - this file: the [`Access`] type, its constructors and limits.
//! - `service`: the tonic service, one method per RPC.
//! - `streams`: grant and home streams loaded and decided, and the streams
//!   around a grant read for the domain's unlock rule.
//! - `writers`: one writer per stream in this process.
//! - `watcher`: doors left open and ended grants ([`Access::watch`]).
//! - [`Clock`]: whose time decides windows.
//! - `sealing`: a grant's geofence center sealed in the vault.
//! - `enrolment`: a home's address sealed under its household's key, its
//!   claim code drawn, and the facts a grant's binding is decided on.
//! - [`device`]: the signatures of a home's devices.

pub mod device;

mod enrolment;
mod sealing;
mod service;
mod streams;
mod watcher;
mod writers;

use std::sync::Arc;

use chrono::Duration;
use threshold_api::v1::access_service_server::AccessServiceServer;
use threshold_log::EventLog;
use threshold_privacy::Vault;
use tonic::{Request, Status};

pub use sealing::resident_subject;
pub use service::reason_name;
pub use threshold_api::clock::Clock;

/// How long an authorized unlock may be used.
pub const UNLOCK_VALID_FOR: Duration = Duration::minutes(2);
/// How long a door may stay unlocked after an entry before an alert.
pub const RELOCK_WITHIN: Duration = Duration::minutes(3);
/// How old a camera's last heartbeat may be for an entry to go ahead.
pub const CAMERA_HEARTBEAT_MAX_AGE: Duration = Duration::seconds(60);

/// The service, over any event log.
#[derive(Clone)]
pub struct Access {
    log: Arc<dyn EventLog>,
    writers: writers::Writers,
    clock: Clock,
    /// Seals the home's position in grants under the resident's key.
    vault: Option<Arc<Vault>>,
    /// Homes with an unlocked door, as far as the log was read.
    open: Arc<tokio::sync::Mutex<watcher::OpenDoors>>,
    authorizations: opentelemetry::metrics::Counter<u64>,
    alerts: opentelemetry::metrics::Counter<u64>,
    /// Grants and claims refused for who asked: a home or parcel not the
    /// resident's, a claim code that does not match.
    refused: opentelemetry::metrics::Counter<u64>,
}

impl Access {
    /// A service that writes to `log`, on the server's clock.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            writers: writers::Writers::default(),
            clock: Clock::System,
            vault: None,
            open: Arc::default(),
            authorizations: opentelemetry::global::meter("threshold.access")
                .u64_counter("threshold.unlock.authorizations")
                .with_description("Unlock authorizations decided, by result and refusal reason")
                .build(),
            alerts: opentelemetry::global::meter("threshold.access")
                .u64_counter("threshold.home.alerts")
                .with_description("Alerts raised around in-home entries, by kind")
                .build(),
            refused: opentelemetry::global::meter("threshold.access")
                .u64_counter("threshold.access.refused")
                .with_description(
                    "Grants and home claims refused for who asked, by reason (not_the_claimant, \
                     parcel_of_another_household, home_not_claimed, claim_code_mismatch, ...)",
                )
                .build(),
        }
    }

    /// The same service on `clock` (a simulation's, for instance).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The same service sealing the home's position in grants under the
    /// resident's key in `vault`: the log then never holds it in the clear.
    pub fn with_vault(mut self, vault: Arc<Vault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// As a tonic service, ready to add to a server.
    pub fn into_server(self) -> AccessServiceServer<Self> {
        AccessServiceServer::new(self).max_decoding_message_size(64 * 1024)
    }

    /// Now, for `request`, on this server's clock.
    fn now<T>(&self, request: &Request<T>) -> Result<chrono::DateTime<chrono::Utc>, Status> {
        self.clock.now(request)
    }
}
