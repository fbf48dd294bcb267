//! HandheldService: drivers' handhelds stream what happens to each parcel:
//! scanned into the van at the depot (`loaded`: out for delivery), then at
//! its door (an attempt started, delivered, failed).
//!
//! Each event is decided on its parcel's history, which the log holds: the
//! parcel aggregate numbers the attempt and refuses what cannot be (a
//! delivery of a parcel already delivered). Before deciding, the history is
//! searched for the event's id, so a resend is answered DUPLICATE with the
//! original's position however the parcel has moved on since. A report that
//! implies an earlier step (a delivery with no reported start) records that
//! step too, under an id derived from the handheld's, so resending stays
//! idempotent. A stream's events are acknowledged in the order they came,
//! each only once the log has it; events on different parcels are decided
//! side by side (up to [`PIPELINE`] at once), events on one parcel one
//! after the other, in the handheld's order.
//!
//! A handheld reports for its own driver only, and only on parcels in that
//! driver's custody ([`threshold_domain::custody`]): the route whose latest
//! plan names the parcel must be the driver's; a parcel no plan names is in
//! nobody's. A parcel reported loaded must be loaded into the van of the
//! route its own stream says it is on (the plan's assignment): the report
//! names that route (`route_id`), and the parcel's state refuses any other
//! (FAILED_PRECONDITION). A started attempt that names a route must name
//! the one the custody check found the parcel on, the driver's own (else
//! FAILED_PRECONDITION, after the resend check). The route plans are the service's in-memory
//! projection of the log, so the check costs no read; only a refusal first
//! lets the projection catch up with the log, so a plan written a moment
//! ago is not missed. An acceptance is not held up that way: within the projection's
//! lag after a plan's append (normally milliseconds) an event is decided on
//! the plans before it. A refused event is answered REJECTED in its ack,
//! with `code` PERMISSION_DENIED and the reason `driver_id: permission
//! denied: …`, like any other rejected event (each carries the code a unary
//! call would have failed with), and the stream goes on. It is counted
//! (`threshold.handheld.refused`, by reason: `not_the_route_driver`,
//! `not_planned`) and logged with the driver, the
//! parcel and the route, not written to the parcel's stream: a hostile
//! handheld must not be able to grow another driver's parcel's history, nor
//! put anything on the stream partners' outcomes come from.
//!
//! When an event happened is the handheld's word only within bounds
//! ([`threshold_domain::custody::handheld_time`]): up to the device skew
//! ahead of the server's clock (a simulation server's clock is the one each
//! stream carries in [`threshold_api::SIMULATED_TIME_HEADER`]), back to the
//! offline-resend bound. Outside them the event is answered REJECTED on
//! `occurred_at` (`code` INVALID_ARGUMENT), counted as refused
//! (`occurred_at_ahead`, `occurred_at_too_old`) and logged. A resend of an
//! event already stored is answered DUPLICATE whatever its age.
//!
//! A failed attempt's free-text note is stored only sealed under the
//! parcel's household key (`sealed_note`), never in the clear. A note that
//! cannot be sealed (the household was forgotten, or the parcel has no
//! sealed address) is dropped and the attempt stored without it: the
//! attempt is a fact the parcel's history needs, the note is not.

use std::pin::Pin;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::Stream;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_server::{HandheldService, HandheldServiceServer};
use threshold_api::v1::{
    AttemptAck, DriverRoute, GetRouteRequest, GetRouteResponse, HandheldEvent, attempt_ack,
};
use threshold_auth::Role;
use threshold_domain::country::instant;
use threshold_domain::custody::{Custody, custody, handheld_time};
use threshold_domain::grant::Grant;
use threshold_domain::home::Home;
use threshold_domain::parcel::{Command, Parcel};
use threshold_domain::{
    Aggregate, DeviceId, DomainError, DriverId, EventId, GrantId, HomeId, ParcelId, RouteId,
    StreamId, pb,
};
use threshold_log::{Decision, Error as LogError, EventLog, Known, NewEvent, load, recorded};
use threshold_status::{ServiceError as _, behind, field, status, stored};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::Instrument as _;

pub use threshold_api::clock::Clock;

/// Appends retried when another writer changed the parcel in between.
const CONFLICT_RETRIES: usize = 5;

/// The largest handheld message accepted, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The longest note a failed attempt may carry: a driver's few lines
/// (stored sealed with the attempt, and shown to the carrier).
pub const MAX_NOTE: usize = 2048;

/// How fast one handheld may send, and how many streams it may hold, in
/// one process.
///
/// A handheld is its credential when the credential names one driver: the
/// rate is shared by every stream it holds open, and it holds at most
/// `streams_per_driver`, so a stolen token takes no more of the server by
/// opening more streams. A credential of every driver (`*`: the carrier's
/// own tools, the load generator, simulations) is many handhelds: each of
/// its streams is one, and it holds at most `streams_per_fleet`, which
/// leaves the rest of `streams` to the drivers' own.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained events per second from one handheld.
    pub events_per_second: f64,
    /// Events one handheld may send at once, e.g. an offline backlog.
    pub burst: f64,
    /// Attempt streams a credential of one driver may hold open at once: a
    /// handheld needs one, and a few while it reconnects.
    pub streams_per_driver: usize,
    /// Attempt streams a credential of every driver may hold open at once.
    pub streams_per_fleet: usize,
    /// Attempt streams open at once on the service, every credential's
    /// together.
    pub streams: usize,
    /// A stream that hears nothing for this long, with nothing in flight,
    /// is closed (`UNAVAILABLE`), and its place given back: a stream on a
    /// connection lost without a word (a handheld in a tunnel) holds it no
    /// longer, so a driver is not shut out by its own lost streams.
    pub stream_idle: std::time::Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            events_per_second: 5_000.0,
            burst: 20_000.0,
            streams_per_driver: 4,
            streams_per_fleet: 4_096,
            streams: 16_384,
            stream_idle: std::time::Duration::from_secs(300),
        }
    }
}

/// Parcels whose state is kept between events; beyond this the cache starts over.
const CACHED_PARCELS: usize = 200_000;

/// Recently used parcels as this service last saw them in the log, each
/// with its events' ids, positions and attempts to answer resends. Only
/// ever a shortcut: every append still carries the expected version, so a
/// stale entry meets a conflict and is dropped.
#[derive(Default)]
struct Parcels(std::sync::Mutex<std::collections::HashMap<StreamId, Arc<Known<Parcel, Note>>>>);

impl threshold_log::Cache<Parcel, Note> for Parcels {
    fn get(&self, stream: &StreamId) -> Option<Arc<Known<Parcel, Note>>> {
        self.0.lock().ok().and_then(|c| c.get(stream).cloned())
    }

    fn release(&self, stream: &StreamId, base: u64) {
        if let Ok(mut c) = self.0.lock()
            && c.get(stream).is_some_and(|k| k.version == base)
        {
            c.remove(stream);
        }
    }

    fn keep(&self, stream: &StreamId, base: u64, known: Arc<Known<Parcel, Note>>) {
        if let Ok(mut c) = self.0.lock() {
            if c.len() >= CACHED_PARCELS {
                c.clear();
            }
            // Only if nobody moved the parcel on meanwhile.
            if c.get(stream).is_none_or(|k| k.version == base) {
                c.insert(stream.clone(), known);
            }
        }
    }

    fn forget(&self, stream: &StreamId) {
        if let Ok(mut c) = self.0.lock() {
            c.remove(stream);
        }
    }
}

/// Acknowledgement latency and duplicates, through the OpenTelemetry API.
#[derive(Clone)]
struct Metrics {
    ack: opentelemetry::metrics::Histogram<f64>,
    results: opentelemetry::metrics::Counter<u64>,
    refused: opentelemetry::metrics::Counter<u64>,
    /// The same refusals by reason, for [`Handhelds::refused`].
    tally: Arc<std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>>,
}

impl Metrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("threshold.handheld");
        Self {
            ack: meter
                .f64_histogram("threshold.handheld.ack.duration")
                .with_unit("s")
                .with_description("From an attempt event's arrival to its acknowledgement")
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                ])
                .build(),
            results: meter
                .u64_counter("threshold.handheld.events")
                .with_description(
                    "Handheld events answered, by result (stored, duplicate, rejected, failed)",
                )
                .build(),
            refused: meter
                .u64_counter("threshold.handheld.refused")
                .with_description(
                    "Handheld events refused, by reason (not_the_route_driver, not_planned, \
                     occurred_at_ahead, occurred_at_too_old)",
                )
                .build(),
            tally: Arc::default(),
        }
    }

    fn refuse(&self, reason: &'static str) {
        self.refused
            .add(1, &[opentelemetry::KeyValue::new("reason", reason)]);
        if let Ok(mut tally) = self.tally.lock() {
            *tally.entry(reason).or_default() += 1;
        }
    }

    fn acked(&self, reply: &Result<AttemptAck, Status>, took: std::time::Duration) {
        let result = match reply {
            Ok(a) => match attempt_ack::Result::try_from(a.result) {
                Ok(attempt_ack::Result::Stored) => "stored",
                Ok(attempt_ack::Result::Duplicate) => "duplicate",
                _ => "rejected",
            },
            Err(_) => "failed",
        };
        let attrs = [opentelemetry::KeyValue::new("result", result)];
        self.ack.record(took.as_secs_f64(), &attrs);
        self.results.add(1, &attrs);
    }
}

/// The service, over any event log.
#[derive(Clone)]
pub struct Handhelds {
    metrics: Metrics,
    log: Arc<dyn EventLog>,
    limits: Limits,
    cache: Arc<Parcels>,
    routes: Arc<std::sync::RwLock<threshold_projections::Routes>>,
    /// Opens the sealed stop positions drivers are handed, and seals what
    /// a handheld reports about a household.
    vault: Option<Arc<threshold_privacy::Vault>>,
    clock: Clock,
    /// The attempt streams open, per credential (see [`Limits`]).
    streams: threshold_auth::Quota,
    /// The rate of each credential of one driver, shared by its streams,
    /// and kept after they close until it has filled again: a handheld
    /// that hangs up and opens a new stream is not handed a new burst.
    buckets: Arc<std::sync::Mutex<Buckets>>,
}

/// A token bucket the streams of one handheld take from.
type Shared = std::sync::Mutex<Bucket>;

/// The bucket a stream's events take from: its own (a stream of a
/// credential of every driver), or its credential's, shared.
enum Rate {
    Own(Bucket),
    Shared(Arc<Shared>),
}

impl Rate {
    /// Takes a token; false when the handheld sends faster than its limits.
    fn take(&mut self) -> bool {
        match self {
            Rate::Own(b) => b.take(),
            Rate::Shared(b) => b.lock().unwrap_or_else(|p| p.into_inner()).take(),
        }
    }
}

/// The buckets of credentials of one driver, by credential name.
#[derive(Default)]
struct Buckets {
    by_name: std::collections::HashMap<String, Arc<Shared>>,
    /// The size at which the map is next pruned: twice what the last
    /// pruning left, so a storm of new handhelds costs O(1) each.
    prune_at: usize,
}

impl Handhelds {
    /// A service that writes to `log`, and follows it for drivers' routes
    /// (call within a tokio runtime).
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        let routes = Arc::new(std::sync::RwLock::new(
            threshold_projections::Routes::default(),
        ));
        let follower = Arc::clone(&routes);
        let followed = Arc::clone(&log);
        tokio::spawn(async move {
            if let Some(e) =
                threshold_projections::follow(followed, follower, threshold_log::Position::ORIGIN)
                    .await
            {
                tracing::error!(error = %e, "handheld: the route projection stopped following the log");
            }
        });
        Self {
            metrics: Metrics::new(),
            log,
            limits: Limits::default(),
            cache: Arc::default(),
            routes,
            vault: None,
            clock: Clock::System,
            streams: stream_quota(Limits::default()),
            buckets: Arc::default(),
        }
    }

    /// On `clock` (a simulation's, for instance) rather than the server's.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// With other limits per handheld.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self.streams = stream_quota(limits);
        self
    }

    /// A place for a stream of `handheld`, and the bucket its events take
    /// from: the credential's own, shared by its streams, when it names
    /// one driver; the stream's own for a credential of every driver.
    fn admit(
        &self,
        handheld: &threshold_auth::Principal,
    ) -> Result<(threshold_auth::Place, Rate), Status> {
        let many = handheld.tenant == threshold_auth::ANY_TENANT;
        let most = if many {
            self.limits.streams_per_fleet
        } else {
            self.limits.streams_per_driver
        };
        let place = self
            .streams
            .take_up_to(&handheld.name, most)
            .map_err(|full| {
                Status::resource_exhausted(match full {
                    threshold_auth::Full::Caller(n) => format!(
                        "credential {:?} holds {n} attempt streams open, its most: try again shortly \
                         (a stream that hears nothing for {} s is closed)",
                        handheld.name,
                        self.limits.stream_idle.as_secs()
                    ),
                    threshold_auth::Full::Total(n) => format!(
                        "{n} attempt streams are open, the server's most: try again shortly"
                    ),
                })
            })?;
        if many {
            return Ok((place, Rate::Own(Bucket::new(self.limits))));
        }
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(shared) = buckets.by_name.get(&handheld.name) {
            return Ok((place, Rate::Shared(Arc::clone(shared))));
        }
        // Those no stream holds and that have filled again are as good as
        // new: they go as the map grows.
        if buckets.by_name.len() >= buckets.prune_at {
            buckets.by_name.retain(|_, b| {
                Arc::strong_count(b) > 1 || !b.lock().unwrap_or_else(|p| p.into_inner()).full()
            });
            buckets.prune_at = (2 * buckets.by_name.len()).max(64);
        }
        let shared = Arc::new(std::sync::Mutex::new(Bucket::new(self.limits)));
        buckets
            .by_name
            .insert(handheld.name.clone(), Arc::clone(&shared));
        Ok((place, Rate::Shared(shared)))
    }

    /// Hands drivers their stops' positions, opened from their seals with
    /// `vault` (without one a sealed position is handed out sealed), and
    /// seals delivery positions and drivers' notes with it (without one a
    /// note is dropped).
    pub fn with_vault(mut self, vault: Arc<threshold_privacy::Vault>) -> Self {
        self.vault = Some(vault);
        self
    }

    /// The driver's view of a stop: its position opened from its seal.
    fn unsealed(&self, route_id: &str, mut stop: pb::PlannedStop) -> pb::PlannedStop {
        if let (Some(vault), Some(sealed)) = (&self.vault, &stop.sealed_position) {
            let context = threshold_domain::route::stop_context(route_id, &stop);
            match vault.unseal_message::<pb::GeoPoint>(sealed, &context) {
                Ok(position) => {
                    // Erased on request: the driver gets no position.
                    stop.position = position;
                    stop.sealed_position = None;
                }
                Err(e) => {
                    tracing::warn!(route_id, error = %e, "a stop's sealed position does not open");
                }
            }
        }
        stop
    }

    /// Events this service (and its clones) refused for `reason` since it
    /// started: what `threshold.handheld.refused` counts under that reason
    /// (`not_the_route_driver`, `not_planned`, `occurred_at_ahead`,
    /// `occurred_at_too_old`).
    pub fn refused(&self, reason: &str) -> u64 {
        self.metrics
            .tally
            .lock()
            .map_or(0, |t| t.get(reason).copied().unwrap_or(0))
    }

    /// As a tonic service, ready to add to a server, refusing messages
    /// larger than [`MAX_MESSAGE`].
    pub fn into_server(self) -> HandheldServiceServer<Self> {
        HandheldServiceServer::new(self).max_decoding_message_size(MAX_MESSAGE)
    }
}

/// The streams a service holds open: `limits.streams` in all, and a
/// credential of one driver `limits.streams_per_driver`.
fn stream_quota(limits: Limits) -> threshold_auth::Quota {
    threshold_auth::Quota::new(limits.streams, limits.streams_per_driver)
}

/// A token bucket: `take` fails once a handheld sends faster than its limits.
struct Bucket {
    limits: Limits,
    tokens: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(limits: Limits) -> Self {
        Self {
            limits,
            tokens: limits.burst,
            at: tokio::time::Instant::now(),
        }
    }

    /// Whether it holds its whole burst again.
    fn full(&self) -> bool {
        let refill = self.at.elapsed().as_secs_f64() * self.limits.events_per_second;
        self.tokens + refill >= self.limits.burst
    }

    fn take(&mut self) -> bool {
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.limits.events_per_second;
        self.tokens = (self.tokens + refill).min(self.limits.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

/// A handheld event that is not accepted, with the field at fault: answered
/// in its acknowledgement, not as a status (the stream goes on).
#[derive(Debug)]
struct Rejected(String);

fn rejected(name: &str, e: impl std::fmt::Display) -> Rejected {
    Rejected(format!("{name}: {e}"))
}

/// What the handheld said, checked for shape.
struct Checked {
    event_id: EventId,
    stream: StreamId,
    command: Command,
    occurred_at: DateTime<Utc>,
}

fn check(e: &HandheldEvent) -> Result<Checked, Rejected> {
    let event_id: EventId = e
        .event_id
        .parse()
        .map_err(|err| rejected("event_id", err))?;
    let parcel = ParcelId::new(&e.parcel_id).map_err(|err| rejected("parcel_id", err))?;
    let driver_id = DriverId::new(&e.driver_id).map_err(|err| rejected("driver_id", err))?;
    let device_id = DeviceId::new(&e.device_id).map_err(|err| rejected("device_id", err))?;
    let route_id = if e.route_id.is_empty() {
        None
    } else {
        Some(RouteId::new(&e.route_id).map_err(|err| rejected("route_id", err))?)
    };
    let occurred_at = e
        .occurred_at
        .as_ref()
        .ok_or_else(|| rejected("occurred_at", "is missing"))
        .and_then(|t| instant(t).map_err(|err| rejected("occurred_at", err)))?;
    let command = match &e.report {
        None => {
            return Err(rejected(
                "report",
                "is missing: loaded, started, delivered or failed",
            ));
        }
        Some(Report::Loaded(_)) => Command::LoadOnVan {
            route_id: route_id.ok_or_else(|| {
                rejected(
                    "route_id",
                    "is missing: a loaded report names the van's route",
                )
            })?,
            driver_id,
        },
        Some(Report::Started(_)) => Command::StartAttempt {
            route_id,
            // Set from the custody check (`handle`).
            planned_route: None,
            driver_id,
            device_id,
        },
        Some(Report::Delivered(d)) => Command::Deliver {
            method: pb::DeliveryMethod::try_from(d.method)
                .ok()
                .filter(|m| *m != pb::DeliveryMethod::Unspecified)
                .ok_or_else(|| {
                    rejected(
                        "delivered.method",
                        format!("{} is not a delivery method", d.method),
                    )
                })?,
            driver_id,
            device_id,
            grant_id: if d.grant_id.is_empty() {
                None
            } else {
                Some(GrantId::new(&d.grant_id).map_err(|err| rejected("delivered.grant_id", err))?)
            },
            position: d.position,
        },
        Some(Report::Failed(f)) if f.note.len() > MAX_NOTE => {
            return Err(rejected(
                "failed.note",
                format!("at most {MAX_NOTE} bytes, not {}", f.note.len()),
            ));
        }
        Some(Report::Failed(f)) => Command::FailAttempt {
            reason: pb::FailureReason::try_from(f.reason)
                .ok()
                .filter(|r| *r != pb::FailureReason::Unspecified)
                .ok_or_else(|| {
                    rejected(
                        "failed.reason",
                        format!("{} is not a failure reason", f.reason),
                    )
                })?,
            driver_id,
            device_id,
            note: f.note.clone(),
        },
    };
    Ok(Checked {
        event_id,
        stream: StreamId::parcel(&parcel),
        command,
        occurred_at,
    })
}

/// The id of the `index`-th step a report implies before itself.
fn implied_id(reported: &EventId, index: usize) -> EventId {
    EventId::from_uuid(uuid::Uuid::new_v5(
        &reported.uuid(),
        format!("implied/{index}").as_bytes(),
    ))
}

/// The attempt an event belongs to (0 for events of no attempt): what a
/// resend of it is answered with.
/// What a decision notes of each stored event of a parcel: its attempt
/// and the report it was stored for.
type Note = (u32, Reported);

/// The report an event was stored for: the last event a report's command
/// writes is stored under the report's own id.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Reported {
    /// No handheld's report (a manifest, a plan).
    #[default]
    Other,
    Loaded,
    Started,
    Delivered,
    Failed,
}

impl Reported {
    fn of(e: &pb::parcel_event::Event) -> Self {
        use pb::parcel_event::Event as E;
        match e {
            E::OutForDelivery(_) => Reported::Loaded,
            E::AttemptStarted(_) => Reported::Started,
            E::Delivered(_) => Reported::Delivered,
            E::AttemptFailed(_) => Reported::Failed,
            _ => Reported::Other,
        }
    }

    fn by(c: &Command) -> Self {
        match c {
            Command::LoadOnVan { .. } => Reported::Loaded,
            Command::StartAttempt { .. } => Reported::Started,
            Command::Deliver { .. } => Reported::Delivered,
            Command::FailAttempt { .. } => Reported::Failed,
            _ => Reported::Other,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Reported::Other => "not a handheld's report",
            Reported::Loaded => "loaded",
            Reported::Started => "started",
            Reported::Delivered => "delivered",
            Reported::Failed => "failed",
        }
    }
}

fn noted(e: &pb::parcel_event::Event) -> Note {
    (attempt_of(e), Reported::of(e))
}

fn attempt_of(e: &pb::parcel_event::Event) -> u32 {
    use pb::parcel_event::Event as E;
    match e {
        E::AttemptStarted(a) => a.attempt,
        E::Delivered(d) => d.attempt,
        E::AttemptFailed(f) => f.attempt,
        _ => 0,
    }
}

/// Whether `driver` may report on `parcel`, by the route plans `routes`
/// holds, and when they may, the route the latest plan puts it on (the
/// driver's own). A refusal is checked again once the projection has caught
/// up with the log's head: a plan written just now may hand the parcel over.
async fn custody_of(
    log: &dyn EventLog,
    routes: &std::sync::RwLock<threshold_projections::Routes>,
    parcel: &str,
    driver: &DriverId,
) -> (Custody, Option<RouteId>) {
    let now = || {
        let routes = routes.read().unwrap_or_else(|p| p.into_inner());
        let carrying = routes.carrying(parcel);
        let verdict = custody(carrying.as_ref(), driver);
        let planned = carrying
            .filter(|_| !verdict.is_refused())
            .and_then(|a| RouteId::new(&a.route_id).ok());
        (verdict, planned)
    };
    let verdict = now();
    if !verdict.0.is_refused() {
        return verdict;
    }
    if let Ok(head) = log.head().await
        && threshold_projections::caught_up(routes, head, std::time::Duration::from_secs(2))
            .await
            .is_err()
    {
        tracing::warn!(
            parcel,
            "handheld: the route projection is behind the log; refusing on what it has"
        );
    }
    now()
}

/// The acknowledgement of an event refused because the parcel is not in
/// its driver's custody: whether it is on another route, and which, or on
/// none, stays unsaid.
fn not_theirs(e: &HandheldEvent) -> AttemptAck {
    refusal(
        e,
        Code::PermissionDenied,
        format!(
            "driver_id: permission denied: {} is not on a route of {}",
            e.parcel_id, e.driver_id
        ),
    )
}

/// The acknowledgement of an event not stored: REJECTED, with the code a
/// unary call would have failed with and why.
fn refusal(e: &HandheldEvent, code: Code, error: String) -> AttemptAck {
    AttemptAck {
        event_id: e.event_id.clone(),
        sequence: e.sequence,
        result: attempt_ack::Result::Rejected as i32,
        position: 0,
        attempt: 0,
        error,
        code: code as i32,
    }
}

/// Decides and appends one handheld event on `attempts`' log; the
/// acknowledgement to send. Its events carry `trace`; a started attempt is
/// held to `planned`, the route the custody check found the parcel on.
async fn handle(
    attempts: &Attempts,
    e: &HandheldEvent,
    planned: Option<RouteId>,
    now: DateTime<Utc>,
    trace: Option<&str>,
) -> Result<AttemptAck, Status> {
    let (log, vault, cache, metrics) = (
        &*attempts.log,
        attempts.vault.as_deref(),
        &*attempts.cache,
        &attempts.metrics,
    );
    let ack =
        |result: attempt_ack::Result, position: u64, attempt: u32, error: String| AttemptAck {
            event_id: e.event_id.clone(),
            sequence: e.sequence,
            result: result as i32,
            position,
            attempt,
            error,
            code: 0,
        };
    let mut checked = match check(e) {
        Ok(c) => c,
        Err(Rejected(why)) => return Ok(refusal(e, Code::InvalidArgument, why)),
    };
    if let Command::StartAttempt { planned_route, .. } = &mut checked.command {
        *planned_route = planned;
    }
    let mut decision = Decision::<Parcel>::new(log, &checked.stream)
        .noting(noted)
        .retries(CONFLICT_RETRIES)
        .cached(cache)
        .recent();
    while let Some(known) = decision.next().await.map_err(status)? {
        if let Some((position, (attempt, stored))) = known.ids.get(&checked.event_id) {
            // The same id on another report is not a resend: answered
            // DUPLICATE, the handheld would drop a report never stored.
            let sent = Reported::by(&checked.command);
            if *stored != sent {
                metrics.refuse("event_id_reused");
                return Ok(refusal(
                    e,
                    Code::AlreadyExists,
                    format!(
                        "event_id: already stored for another report on this parcel ({}), \
                         not this {} report; send it under a new id",
                        stored.as_str(),
                        sent.as_str()
                    ),
                ));
            }
            return Ok(ack(
                attempt_ack::Result::Duplicate,
                *position,
                *attempt,
                String::new(),
            ));
        }
        // Not before the resend check: an event stored once is answered
        // DUPLICATE however old it has become.
        let occurred_at = match handheld_time(checked.occurred_at, now) {
            Ok(at) => at,
            Err(err) => {
                let reason = if checked.occurred_at > now {
                    "occurred_at_ahead"
                } else {
                    "occurred_at_too_old"
                };
                metrics.refuse(reason);
                tracing::warn!(
                    driver_id = %e.driver_id,
                    device_id = %e.device_id,
                    parcel_id = %e.parcel_id,
                    event_id = %e.event_id,
                    occurred_at = %checked.occurred_at,
                    server_time = %now,
                    reason,
                    "handheld event refused: its time is out of bounds"
                );
                let code = err.code();
                let why = match err {
                    DomainError::Invalid { field: f, reason } => format!("{f}: {reason}"),
                    other => other.to_string(),
                };
                return Ok(refusal(e, code, why));
            }
        };
        let state = &known.state;
        let events = match state.decide(&checked.command) {
            // Refused, or nothing to write, on a state that may lack
            // another process's latest events: decide again on the stream
            // as the log holds it.
            Ok(events) if events.is_empty() && decision.confirm() => continue,
            Err(_) if decision.confirm() => continue,
            Ok(events) => events,
            Err(DomainError::Invalid { field: f, reason }) => {
                return Ok(refusal(e, Code::InvalidArgument, format!("{f}: {reason}")));
            }
            Err(err) => {
                let (code, why) = match state.status {
                    threshold_domain::parcel::Status::Unknown => (
                        Code::NotFound,
                        format!("{} is not manifested", checked.stream),
                    ),
                    _ => (err.code(), err.to_string()),
                };
                return Ok(refusal(e, code, why));
            }
        };
        // Already in effect (a parcel scanned again into the van it is in):
        // nothing new, as for a resend, but no original to point at.
        if events.is_empty() {
            return Ok(ack(attempt_ack::Result::Duplicate, 0, 0, String::new()));
        }
        if let Command::Deliver {
            method: pb::DeliveryMethod::InHome,
            grant_id: Some(grant_id),
            ..
        } = &checked.command
            && let Some(why) = entry_not_closed(log, grant_id, parcel_of(&checked.stream)).await?
        {
            return Ok(refusal(e, Code::FailedPrecondition, why));
        }
        // Where the handheld was is where the household lives, and what a
        // driver writes is about it: sealed under its key, like the address.
        let events: Vec<pb::parcel_event::Event> = events
            .into_iter()
            .map(|ev| seal_personal(vault, state, &checked.stream, ev))
            .collect::<Result<_, _>>()?;
        let attempt = events.last().map_or(0, attempt_of);
        let last = events.len().saturating_sub(1);
        let new: Vec<(pb::parcel_event::Event, NewEvent)> = events
            .into_iter()
            .enumerate()
            .map(|(i, ev)| {
                let id = if i == last {
                    checked.event_id
                } else {
                    implied_id(&checked.event_id, i)
                };
                let mut n = NewEvent::new(id, &Parcel::into_domain(ev.clone()), occurred_at)
                    .caused_by(checked.event_id.to_string(), e.device_id.clone());
                // The handheld's trace continues through the log.
                if let Some(tp) = trace {
                    n = n.traced(tp);
                }
                (ev, n.of_parcel(state))
            })
            .collect();
        // `None`: the log knew better than the cache (an id it already
        // had, or another writer's events); decide again from the log.
        match decision.append(known, new).await {
            Ok(Some(decided)) => {
                let position = decided.positions.last().copied().unwrap_or(0);
                return Ok(ack(
                    attempt_ack::Result::Stored,
                    position,
                    attempt,
                    String::new(),
                ));
            }
            Ok(None) => {}
            Err(err @ LogError::EventIdReused { .. }) => {
                return Ok(refusal(
                    e,
                    Code::InvalidArgument,
                    format!("event_id: {}", err.reply()),
                ));
            }
            Err(err) => return Err(status(err)),
        }
    }
    Ok(refusal(
        e,
        Code::Aborted,
        format!("{} kept changing; resend", checked.stream),
    ))
}

/// What an event says about the parcel's household, sealed under its key:
/// a delivery's position when the address is sealed (a parcel manifested
/// without a vault keeps it clear), a failed attempt's note always (a note
/// that cannot be sealed is dropped, never stored clear).
fn seal_personal(
    vault: Option<&threshold_privacy::Vault>,
    state: &Parcel,
    stream: &StreamId,
    event: pb::parcel_event::Event,
) -> Result<pb::parcel_event::Event, Status> {
    let household = state
        .manifest
        .as_ref()
        .and_then(|m| m.sealed_address.as_ref())
        .map(|s| s.subject.as_str());
    let mut d = match event {
        pb::parcel_event::Event::Delivered(d) => d,
        pb::parcel_event::Event::AttemptFailed(f) => {
            return Ok(pb::parcel_event::Event::AttemptFailed(seal_note(
                vault, household, stream, f,
            )?));
        }
        other => return Ok(other),
    };
    if let (Some(vault), Some(household), Some(position)) = (vault, household, d.position) {
        let context = format!("{stream}/delivered");
        d.sealed_position = Some(
            vault
                .seal_message(household, &context, &position)
                .map_err(status)?,
        );
        d.position = None;
    }
    Ok(pb::parcel_event::Event::Delivered(d))
}

/// A failed attempt with its note sealed under `household`'s key, or
/// dropped when it cannot be: no vault or no household to seal under, or a
/// forgotten household (nothing new is sealed under a forgotten subject,
/// and the attempt is stored without its note rather than refused).
fn seal_note(
    vault: Option<&threshold_privacy::Vault>,
    household: Option<&str>,
    stream: &StreamId,
    mut f: pb::AttemptFailed,
) -> Result<pb::AttemptFailed, Status> {
    if f.note.is_empty() {
        return Ok(f);
    }
    let note = std::mem::take(&mut f.note);
    let parcel = parcel_of(stream);
    let (Some(vault), Some(household)) = (vault, household) else {
        tracing::info!(
            parcel_id = parcel,
            "a driver's note is dropped: the parcel has no household to seal it under"
        );
        return Ok(f);
    };
    let context = threshold_domain::parcel::note_context(parcel, f.attempt);
    match vault.seal(household, &context, note.as_bytes()) {
        Ok(sealed) => f.sealed_note = Some(sealed),
        Err(threshold_privacy::Error::Forgotten { .. }) => {
            tracing::info!(
                parcel_id = parcel,
                "a driver's note is dropped: the parcel's household was forgotten"
            );
        }
        Err(e) => return Err(status(e)),
    }
    Ok(f)
}

fn parcel_of(stream: &StreamId) -> &str {
    stream.id()
}

/// Why an in-home delivery under `grant_id` cannot be closed yet, if it
/// cannot: the grant's and its home's streams are read, and the domain's
/// rule ([`threshold_domain::entry::in_home_not_closed`]) decides.
async fn entry_not_closed(
    log: &dyn EventLog,
    grant_id: &GrantId,
    parcel: &str,
) -> Result<Option<String>, Status> {
    let (grant, _) = load::<Grant>(log, &StreamId::grant(grant_id))
        .await
        .map_err(status)?;
    // The home is read only when the lock can have opened for the parcel.
    let home_events = match (grant.home_id(), grant.redeemed(parcel)) {
        (Some(home), Some(_)) => {
            let home = HomeId::new(home).map_err(stored)?;
            let (_, history) = load::<Home>(log, &StreamId::home(&home))
                .await
                .map_err(status)?;
            recorded::<Home>(&history).collect()
        }
        _ => Vec::new(),
    };
    Ok(threshold_domain::entry::in_home_not_closed(
        grant_id,
        &grant,
        parcel,
        home_events,
    ))
}

type AckStream = Pin<Box<dyn Stream<Item = Result<AttemptAck, Status>> + Send>>;

#[tonic::async_trait]
impl HandheldService for Handhelds {
    type StreamAttemptsStream = AckStream;

    async fn get_route(
        &self,
        request: Request<GetRouteRequest>,
    ) -> Result<Response<GetRouteResponse>, Status> {
        let caller = threshold_auth::require(&request, &[Role::Handheld, Role::Planner])?.clone();
        let r = request.into_inner();
        let driver = DriverId::new(&r.driver_id).map_err(|e| field("driver_id", e))?;
        if caller.role == Role::Handheld {
            caller.check_tenant("driver", driver.as_str())?;
        }
        let day = r
            .date
            .as_ref()
            .ok_or_else(|| field("date", "is missing"))
            .and_then(|d| {
                threshold_domain::country::date_from_proto(d).map_err(|e| field("date", e))
            })?;
        // Answer from a projection that has seen everything durable now.
        let head = self.log.head().await.map_err(status)?;
        threshold_projections::caught_up(&self.routes, head, std::time::Duration::from_secs(5))
            .await
            .map_err(|at| {
                behind(format!(
                    "routes are at position {at}, the log at {head}; retry"
                ))
            })?;
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let routes = routes
            .for_driver(driver.as_str(), day)
            .into_iter()
            // A depot's planner reads its own depot's routes.
            .filter(|r| caller.role != Role::Planner || caller.covers(&r.depot_id))
            .map(|r| DriverRoute {
                route_id: r.route_id.clone(),
                depot_id: r.depot_id.clone(),
                vehicle_id: r.vehicle_id.clone(),
                plan_version: r.plan_version,
                stops: r
                    .stops
                    .iter()
                    .map(|s| self.unsealed(&r.route_id, s.clone()))
                    .collect(),
            })
            .collect();
        Ok(Response::new(GetRouteResponse { routes }))
    }

    async fn stream_attempts(
        &self,
        request: Request<Streaming<HandheldEvent>>,
    ) -> Result<Response<Self::StreamAttemptsStream>, Status> {
        let handheld = threshold_auth::require(&request, &[Role::Handheld])?.clone();
        let (place, bucket) = self.admit(&handheld)?;
        let standing = threshold_auth::Standing::of(&request);
        let simulated = self.clock.required(&request)?;
        let inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let stream_span = tracing::Span::current();
        // The stream's trace context, computed once; a span per event only
        // when the trace is recorded, so unsampled streams stay cheap.
        let stream_trace = threshold_telemetry::traceparent(&stream_span);
        let sampled = stream_trace
            .as_deref()
            .is_some_and(threshold_telemetry::sampled);
        let attempts = Arc::new(Attempts {
            log: Arc::clone(&self.log),
            vault: self.vault.clone(),
            cache: Arc::clone(&self.cache),
            routes: Arc::clone(&self.routes),
            metrics: self.metrics.clone(),
            handheld,
            limits: self.limits,
            simulated,
            stream_span,
            stream_trace,
            sampled,
        });
        let idle = self.limits.stream_idle;
        tokio::spawn(async move {
            pipeline(attempts, inbound, bucket, standing, idle, tx).await;
            // The stream's place is held until its last event is answered.
            drop(place);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Events of one stream decided at once, at most. Events on different
/// parcels are independent and overlap; events on one parcel wait for the
/// one before them on that parcel.
pub const PIPELINE: usize = 64;

/// What every event of one stream is decided with.
struct Attempts {
    log: Arc<dyn EventLog>,
    vault: Option<Arc<threshold_privacy::Vault>>,
    cache: Arc<Parcels>,
    routes: Arc<std::sync::RwLock<threshold_projections::Routes>>,
    metrics: Metrics,
    handheld: threshold_auth::Principal,
    /// The limits its events are taken within.
    limits: Limits,
    /// The simulation's time the stream was sent at, on a simulation server.
    simulated: Option<DateTime<Utc>>,
    stream_span: tracing::Span,
    stream_trace: Option<String>,
    sampled: bool,
}

impl Attempts {
    /// One event's answer: refused when it is not the handheld's to report,
    /// decided on its parcel's history otherwise.
    async fn answer(&self, event: &HandheldEvent) -> Result<AttemptAck, Status> {
        let (span, trace) = if self.sampled {
            let span = tracing::info_span!(
                parent: &self.stream_span,
                "handheld.attempt",
                parcel_id = %event.parcel_id,
                device_id = %event.device_id,
                sequence = event.sequence,
            );
            let trace = threshold_telemetry::traceparent(&span);
            (span, trace)
        } else {
            (tracing::Span::none(), self.stream_trace.clone())
        };
        let handheld = &self.handheld;
        // A handheld reports for its own driver only, on parcels in that
        // driver's custody. A malformed event (an id over its limit, say)
        // is left to `handle`, which names the field: its shape is judged
        // before whose it is.
        let verdict = match DriverId::new(&event.driver_id) {
            Ok(driver) if handheld.covers(&event.driver_id) && check(event).is_ok() => {
                Some(custody_of(&*self.log, &self.routes, &event.parcel_id, &driver).await)
            }
            _ => None,
        };
        let refused = verdict.as_ref().and_then(|(c, _)| c.refusal());
        if let (Some(reason), Some((verdict, _))) = (refused, &verdict) {
            self.metrics.refuse(reason);
            let route_id = match verdict {
                Custody::NotTheirs { route_id } => route_id.as_str(),
                _ => "",
            };
            tracing::warn!(
                driver_id = %event.driver_id,
                device_id = %event.device_id,
                parcel_id = %event.parcel_id,
                route_id,
                event_id = %event.event_id,
                reason,
                "handheld event refused: the parcel is not on a route of the driver"
            );
            Ok(not_theirs(event))
        } else if handheld.covers(&event.driver_id) {
            // The server's clock now, or the simulation's the stream was
            // sent at.
            let now = self.simulated.unwrap_or_else(Utc::now);
            let planned = verdict.and_then(|(_, planned)| planned);
            handle(self, event, planned, now, trace.as_deref())
                .instrument(span)
                .await
        } else {
            Ok(refusal(
                event,
                Code::PermissionDenied,
                format!(
                    "driver_id: handheld {:?} reports for {}, not {}",
                    handheld.name, handheld.tenant, event.driver_id
                ),
            ))
        }
    }
}

/// Reads a stream's events and answers each, acknowledging in the order
/// they came. Up to [`PIPELINE`] events are decided at once; an event waits
/// for the one before it on the same parcel, so a parcel's events are
/// decided, stored and answered in the handheld's order, as they were one
/// at a time. A stream that ends (the handheld hung up, sent too fast, or
/// sent something unreadable) is answered for every event already taken
/// before it closes.
async fn pipeline(
    attempts: Arc<Attempts>,
    mut inbound: Streaming<HandheldEvent>,
    mut rate: Rate,
    standing: Option<threshold_auth::Standing>,
    idle: std::time::Duration,
    tx: mpsc::Sender<Result<AttemptAck, Status>>,
) {
    // A credential revoked while the stream is open ends it within a
    // second, idle or not: a stolen handheld's open stream too.
    let mut check = tokio::time::interval(threshold_auth::STANDING_EVERY);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    check.tick().await;
    let mut deciding = futures::stream::FuturesOrdered::new();
    // Per parcel: the last event taken on it, and word of when it is done.
    let mut last: std::collections::HashMap<String, (u64, tokio::sync::oneshot::Receiver<()>)> =
        std::collections::HashMap::new();
    let mut taken = 0u64;
    // When the handheld last sent anything.
    let mut heard = tokio::time::Instant::now();
    // Why the stream ends once every taken event is answered, if it does.
    let mut closing: Option<Option<Status>> = None;
    loop {
        tokio::select! {
            biased;
            Some((index, parcel, reply)) = futures::StreamExt::next(&mut deciding) => {
                if last.get(&parcel).is_some_and(|(i, _)| *i == index) {
                    last.remove(&parcel);
                }
                let reply: Result<AttemptAck, Status> = reply;
                let failed = reply.is_err();
                // A handheld that reads no acks for as long as a stream
                // may idle is gone: its stream ends, and its place with it.
                // The timer is taken only when the acks are backed up.
                let sent = match tx.try_send(reply) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(reply)) => {
                        matches!(tokio::time::timeout(idle, tx.send(reply)).await, Ok(Ok(())))
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                };
                if !sent || failed {
                    return;
                }
            }
            _ = check.tick(), if closing.is_none() => {
                if let Some(lapse) = standing.as_ref().and_then(|s| s.lapse()) {
                    closing = Some(Some(Status::unauthenticated(format!(
                        "the credential this stream was opened with {lapse}; events after it \
                         were not taken"
                    ))));
                } else if deciding.is_empty() && heard.elapsed() >= idle {
                    closing = Some(Some(Status::unavailable(format!(
                        "nothing heard for {} s: the stream is closed; open a new one to report more",
                        idle.as_secs()
                    ))));
                }
            }
            message = inbound.message(), if closing.is_none() && deciding.len() < PIPELINE => {
                let event = match message {
                    Ok(Some(e)) => {
                        heard = tokio::time::Instant::now();
                        e
                    }
                    // The handheld hung up: what it has no ack for, it
                    // resends on reconnect.
                    Ok(None) => {
                        closing = Some(None);
                        continue;
                    }
                    Err(status) => {
                        closing = Some(Some(threshold_api::status::oversized(status)));
                        continue;
                    }
                };
                if !rate.take() {
                    let limits = attempts.limits;
                    closing = Some(Some(Status::resource_exhausted(format!(
                        "more than {} events/s (burst {}) from one handheld; event {} and later were not stored, resend them more slowly",
                        limits.events_per_second, limits.burst, event.sequence
                    ))));
                    continue;
                }
                let received = std::time::Instant::now();
                taken += 1;
                let index = taken;
                let (done, next) = tokio::sync::oneshot::channel::<()>();
                let before = last
                    .insert(event.parcel_id.clone(), (index, next))
                    .map(|(_, before)| before);
                let attempts = Arc::clone(&attempts);
                deciding.push_back(async move {
                    if let Some(before) = before {
                        // Sent or dropped: either way the event before is done.
                        let _ = before.await;
                    }
                    let reply = attempts.answer(&event).await;
                    drop(done);
                    attempts.metrics.acked(&reply, received.elapsed());
                    (index, event.parcel_id, reply)
                });
            }
            else => {
                if let Some(Some(status)) = closing {
                    let _ = tokio::time::timeout(idle, tx.send(Err(status))).await;
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use threshold_domain::ParcelId;
    use threshold_log::{Cache, EmbeddedLog, EmbeddedOptions};

    use super::*;

    /// The parcel cache lets a state go only at the version a decision
    /// appended on, and keeps a state only over the one it moved on.
    #[tokio::test]
    async fn the_parcel_cache_lets_go_and_keeps_only_at_the_version_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).expect("open");
        let stream = StreamId::parcel(&ParcelId::new("SE-1").expect("id"));
        let mut d = Decision::<Parcel>::new(&log, &stream).noting(noted);
        let known = d.next().await.expect("read").expect("a state");
        assert_eq!(known.version, 0);
        let parcels = Parcels::default();
        parcels.keep(&stream, 0, Arc::clone(&known));
        parcels.release(&stream, 1);
        assert!(parcels.get(&stream).is_some(), "kept at 0, released at 1");
        parcels.release(&stream, 0);
        assert!(parcels.get(&stream).is_none());

        parcels.keep(&stream, 0, Arc::clone(&known));
        // A state made on another version does not replace the one kept.
        let stale = Arc::new(Known::clone(&known));
        parcels.keep(&stream, 5, Arc::clone(&stale));
        let held = parcels.get(&stream).expect("kept");
        assert!(Arc::ptr_eq(&held, &known) && !Arc::ptr_eq(&held, &stale));
        parcels.forget(&stream);
        assert!(parcels.get(&stream).is_none());
        log.close().await.expect("close");
    }
}
