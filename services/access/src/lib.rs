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
//! 1. The resident issues a grant (`IssueGrant`).
//! 2. At the door the driver scans the parcel (an `AttemptStarted` through
//!    the handheld service) and asks `AuthorizeUnlock` with the route and
//!    the handheld's position. The server checks the grant (revoked, used,
//!    expired, window, scoped driver) and then the other streams: the route
//!    carries the parcel and is the driver's, the driver scanned it, the
//!    position is inside the geofence, the camera's heartbeat is fresh and it
//!    records, and no household condition blocks. Every refusal is recorded
//!    on the grant with its reason and answered with the grant's fallback.
//! 3. The home's lock presents the nonce (`RedeemUnlock`, signed with the
//!    home's device key) and opens only on a yes. A nonce opens once; a
//!    revoke recorded meanwhile, or an authorization run out, refuses it.
//! 4. The lock reports what happened (`RecordDeviceEvent`, signed): unlocked,
//!    relocked, the handle checked. An unsigned or badly signed report is
//!    refused, never stored. A watcher ([`Access::watch`]) raises an alert
//!    when a door stays unlocked longer than [`RELOCK_WITHIN`] or its camera
//!    falls silent while it is open; the handheld service refuses to close
//!    the attempt as delivered in-home before the lock reported the relock.
//! 5. The resident gets a receipt (`GetReceipt`) holding the head of the
//!    home's audit chain.

pub mod device;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use prost::Message as _;
use threshold_api::v1::access_service_server::{AccessService, AccessServiceServer};
use threshold_api::v1::{
    AuthorizeUnlockReply, AuthorizeUnlockRequest, ClockReply, ClockRequest, DeviceEventReply,
    DeviceEventRequest, GrantReply, IssueGrantRequest, Receipt, ReceiptRequest, RedeemUnlockReply,
    RedeemUnlockRequest, RevokeGrantRequest,
};
use threshold_auth::{Principal, Role};
use threshold_domain::country::{instant, local_window, parse_local, timestamp, window_bounds};
use threshold_domain::grant::{Command as GrantCommand, Grant};
use threshold_domain::home::{Command as HomeCommand, Home};
use threshold_domain::parcel::{Parcel, Status as ParcelStatus};
use threshold_domain::route::Route;
use threshold_domain::{
    Aggregate, Country, DomainError, DomainEvent, DriverId, EventId, GrantId, HomeId, ParcelId,
    RouteId, StreamId, pb,
};
use threshold_log::{
    DecideError, Error as LogError, EventLog, Position, RecordedEvent, audit, decide,
    decide_chained,
};
use threshold_privacy::Vault;
use tonic::{Request, Response, Status};

use crate::device::Signed;

/// How long an authorized unlock may be used.
pub const UNLOCK_VALID_FOR: Duration = Duration::minutes(2);
/// How long a door may stay unlocked after an entry before an alert.
pub const RELOCK_WITHIN: Duration = Duration::minutes(3);
/// How old a camera's last heartbeat may be for an entry to go ahead.
pub const CAMERA_HEARTBEAT_MAX_AGE: Duration = Duration::seconds(60);

type Deny = pb::UnlockDenyReason;

/// One writer at a time per stream in this process: decisions on a grant
/// queue instead of racing (the expected version still guards against other
/// processes).
#[derive(Clone, Default)]
struct Writers {
    locks: Arc<std::sync::Mutex<HashMap<StreamId, Arc<tokio::sync::Mutex<()>>>>>,
}

impl Writers {
    async fn run<T>(&self, stream: &StreamId, work: impl Future<Output = T>) -> T {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(locks.entry(stream.clone()).or_default())
        };
        let out = {
            let _turn = lock.lock().await;
            work.await
        };
        // The last one out removes the stream's lock.
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&lock) == 2 {
            locks.remove(stream);
        }
        out
    }
}

/// The watcher's reading of the log: where it got to, which homes' doors
/// were unlocked there, and when the open grants' windows end.
#[derive(Default)]
struct OpenDoors {
    after: Position,
    /// The log was read up to its head once: since then this service's own
    /// decisions (it is the only writer of grants and homes) keep it.
    recovered: bool,
    homes: BTreeSet<HomeId>,
    grants: HashMap<GrantId, DateTime<Utc>>,
}

impl OpenDoors {
    fn home(&mut self, home: HomeId, event: &pb::home_event::Event) {
        use pb::home_event::Event as H;
        match event {
            H::Unlocked(_) => {
                self.homes.insert(home);
            }
            H::Relocked(_) => {
                self.homes.remove(&home);
            }
            H::HandleChecked(h) if h.locked => {
                self.homes.remove(&home);
            }
            _ => {}
        }
    }

    fn grant(&mut self, id: GrantId, event: &pb::grant_event::Event) {
        use pb::grant_event::Event as G;
        match event {
            G::Issued(g) => {
                if let Some((_, end)) = g.window.as_ref().and_then(|w| window_bounds(w).ok()) {
                    self.grants.insert(id, end);
                }
            }
            G::Revoked(_) | G::Expired(_) => {
                self.grants.remove(&id);
            }
            _ => {}
        }
    }
}

/// Whose clock decides windows and expiry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Clock {
    /// The server's own: the only choice for real deliveries.
    #[default]
    System,
    /// The simulator's, carried by each request in
    /// [`threshold_api::SIMULATED_TIME_HEADER`].
    Simulated,
}

impl Clock {
    /// Now, for `request`: the server's time, or the simulated one.
    fn now<T>(self, request: &Request<T>) -> Result<DateTime<Utc>, Status> {
        let header = request.metadata().get(threshold_api::SIMULATED_TIME_HEADER);
        match (self, header) {
            (Clock::System, None) => Ok(Utc::now()),
            (Clock::System, Some(_)) => Err(Status::failed_precondition(format!(
                "{} is refused: this server runs on its own clock, not a simulation's",
                threshold_api::SIMULATED_TIME_HEADER
            ))),
            (Clock::Simulated, None) => Err(Status::failed_precondition(format!(
                "this server runs a simulation; requests must carry {}",
                threshold_api::SIMULATED_TIME_HEADER
            ))),
            (Clock::Simulated, Some(v)) => v
                .to_str()
                .ok()
                .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&Utc))
                .ok_or_else(|| {
                    field(
                        threshold_api::SIMULATED_TIME_HEADER,
                        format!("{v:?} is not an RFC 3339 time"),
                    )
                }),
        }
    }
}

/// The service, over any event log.
#[derive(Clone)]
pub struct Access {
    log: Arc<dyn EventLog>,
    writers: Writers,
    clock: Clock,
    /// Seals the home's position in grants under the resident's key.
    vault: Option<Arc<Vault>>,
    /// Homes with an unlocked door, as far as the log was read.
    open: Arc<tokio::sync::Mutex<OpenDoors>>,
    authorizations: opentelemetry::metrics::Counter<u64>,
    alerts: opentelemetry::metrics::Counter<u64>,
}

impl Access {
    /// A service that writes to `log`, on the server's clock.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            writers: Writers::default(),
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
        }
    }

    /// Now, for `request`, on this server's clock.
    fn now<T>(&self, request: &Request<T>) -> Result<DateTime<Utc>, Status> {
        self.clock.now(request)
    }

    /// A stream's history and the state it folds to.
    async fn load<A: Aggregate>(
        &self,
        stream: &StreamId,
        unwrap: impl Fn(DomainEvent) -> Option<A::Event>,
    ) -> Result<(A, Vec<RecordedEvent>), Status> {
        let history = self
            .log
            .read_stream(stream, 0, usize::MAX)
            .await
            .map_err(failed)?;
        let mut state = A::default();
        for r in &history {
            if let Some(e) = unwrap(r.decode().map_err(failed)?) {
                state.evolve_recorded(&e, r.event.occurred_at);
            }
        }
        Ok((state, history))
    }

    async fn load_grant(&self, id: &GrantId) -> Result<Grant, Status> {
        let (g, _) = self
            .load::<Grant>(&StreamId::grant(id), |e| match e {
                DomainEvent::Grant(g) => Some(g),
                _ => None,
            })
            .await?;
        Ok(g)
    }

    async fn load_home(&self, id: &HomeId) -> Result<(Home, Vec<RecordedEvent>), Status> {
        self.load::<Home>(&StreamId::home(id), |e| match e {
            DomainEvent::Home(h) => Some(h),
            _ => None,
        })
        .await
    }

    /// The first refusal the streams around a grant give for an unlock now:
    /// route, scan, geofence, camera, household; `None` when all hold.
    async fn refusal_elsewhere(
        &self,
        issued: &pb::GrantIssued,
        r: &AuthorizeUnlockRequest,
        parcel: &ParcelId,
        driver: &DriverId,
        now: DateTime<Utc>,
    ) -> Result<Option<(Deny, String)>, Status> {
        let scoped = issued.scope.as_ref().map_or("", |s| s.route_id.as_str());
        if r.route_id.is_empty() {
            return Ok(Some((
                Deny::NotOnRoute,
                "the request names no route".into(),
            )));
        }
        if !scoped.is_empty() && scoped != r.route_id {
            return Ok(Some((
                Deny::NotOnRoute,
                format!("the grant is for route {scoped}, not {}", r.route_id),
            )));
        }
        let route_id = RouteId::new(&r.route_id).map_err(|e| field("route_id", e))?;
        let (route, _) = self
            .load::<Route>(&StreamId::route(&route_id), |e| match e {
                DomainEvent::Route(x) => Some(x),
                _ => None,
            })
            .await?;
        let Some(plan) = &route.plan else {
            return Ok(Some((
                Deny::NotOnRoute,
                format!("route {route_id} is not planned"),
            )));
        };
        if plan.driver_id != driver.as_str() {
            return Ok(Some((
                Deny::NotOnRoute,
                format!("route {route_id} is driven by {}", plan.driver_id),
            )));
        }
        if !route
            .stops
            .iter()
            .any(|s| s.parcel_ids.iter().any(|p| p == parcel.as_str()))
        {
            return Ok(Some((
                Deny::NotOnRoute,
                format!("route {route_id} does not carry {parcel}"),
            )));
        }
        let (p, _) = self
            .load::<Parcel>(&StreamId::parcel(parcel), |e| match e {
                DomainEvent::Parcel(x) => Some(x),
                _ => None,
            })
            .await?;
        if p.status != ParcelStatus::Attempting || p.attempt_by.as_deref() != Some(driver.as_str())
        {
            return Ok(Some((
                Deny::ParcelNotScanned,
                format!("{driver} has not scanned {parcel} for an attempt"),
            )));
        }
        let fence = issued.geofence.as_ref();
        let center = self.center_of(issued)?;
        if fence.is_some_and(|f| f.sealed_center.is_some()) && center.is_none() {
            return Ok(Some((
                Deny::OutsideGeofence,
                "the home's position was erased on the resident's request".into(),
            )));
        }
        match (center, &r.position) {
            (_, None) => {
                return Ok(Some((
                    Deny::OutsideGeofence,
                    "the request carries no position".into(),
                )));
            }
            (Some(c), Some(at)) => {
                let radius = fence.map_or(0, |f| f.radius_m);
                let d = threshold_domain::geo::great_circle_m(
                    (c.latitude, c.longitude),
                    (at.latitude, at.longitude),
                );
                if d.is_nan() || d > f64::from(radius) {
                    return Ok(Some((
                        Deny::OutsideGeofence,
                        format!("{d:.0} m from the door; the geofence is {radius} m"),
                    )));
                }
            }
            (None, Some(_)) => {
                return Ok(Some((
                    Deny::OutsideGeofence,
                    "the grant has no geofence".into(),
                )));
            }
        }
        let home_id = HomeId::new(&issued.home_id).map_err(|e| field("home_id", e))?;
        let (home, _) = self.load_home(&home_id).await?;
        if home.lock.is_none() {
            return Ok(Some((
                Deny::CameraOffline,
                format!("home/{home_id} has no registered lock and camera"),
            )));
        }
        if !home.camera_ready(now, CAMERA_HEARTBEAT_MAX_AGE) {
            let fresh = home.camera.online
                && home
                    .camera
                    .last_heartbeat
                    .is_some_and(|t| now.signed_duration_since(t) <= CAMERA_HEARTBEAT_MAX_AGE);
            let last = home
                .camera
                .last_heartbeat
                .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
            return Ok(Some(if fresh {
                (
                    Deny::CameraNotRecording,
                    "the camera is online but not recording".into(),
                )
            } else {
                (
                    Deny::CameraOffline,
                    format!(
                        "the camera's last heartbeat was {last}; it must be within {} s",
                        CAMERA_HEARTBEAT_MAX_AGE.num_seconds()
                    ),
                )
            }));
        }
        let conditions = issued.conditions.unwrap_or_default();
        if conditions.alarm_to_disarm && home.alarm_armed != Some(false) {
            return Ok(Some((
                Deny::HouseholdCondition,
                "the alarm is not reported disarmed".into(),
            )));
        }
        if conditions.pet_present && !r.pet_acknowledged {
            return Ok(Some((
                Deny::HouseholdCondition,
                "a pet is at home and the driver has not acknowledged the resident's note".into(),
            )));
        }
        Ok(None)
    }

    /// The grant, if `resident` may act on it: `PERMISSION_DENIED` for
    /// another resident's grant.
    async fn check_resident(&self, resident: &Principal, id: &GrantId) -> Result<Grant, Status> {
        let grant = self.load_grant(id).await?;
        let issued = grant
            .issued
            .as_ref()
            .ok_or_else(|| Status::not_found(format!("grant/{id}")))?;
        resident.check_tenant("resident", &issued.resident_ref)?;
        Ok(grant)
    }

    /// Decides a home command as the home's single writer in this process:
    /// the events sealed into the audit chain, the device's ones under
    /// `event_id`, alerts under fresh ids, all at `at`.
    async fn home(
        &self,
        home_id: &HomeId,
        command: HomeCommand,
        event_id: EventId,
        at: DateTime<Utc>,
    ) -> Result<threshold_log::Decided<pb::home_event::Event>, Status> {
        let stream = StreamId::home(home_id);
        let decided = self
            .writers
            .run(
                &stream,
                decide_chained::<Home, _>(
                    &*self.log,
                    &stream,
                    &command,
                    |e| match e {
                        DomainEvent::Home(x) => Some(x),
                        _ => None,
                    },
                    DomainEvent::Home,
                    |e| match e {
                        pb::home_event::Event::AlertRaised(_) => (EventId::new(), at),
                        _ => (event_id, at),
                    },
                ),
            )
            .await
            .map_err(undecided)?;
        let mut watched = self.open.lock().await;
        for e in &decided.events {
            watched.home(home_id.clone(), e);
        }
        drop(watched);
        for e in &decided.events {
            if let pb::home_event::Event::AlertRaised(a) = e {
                let kind = pb::AlertKind::try_from(a.kind)
                    .map_or("unknown", |k| k.as_str_name())
                    .trim_start_matches("ALERT_KIND_")
                    .to_lowercase();
                self.alerts
                    .add(1, &[opentelemetry::KeyValue::new("kind", kind)]);
            }
        }
        Ok(decided)
    }

    /// Looks at every home whose door is unlocked at `now` and raises the
    /// alerts due: not relocked within [`RELOCK_WITHIN`], or a camera silent
    /// for longer than [`CAMERA_HEARTBEAT_MAX_AGE`] while it is open.
    /// Returns how many alerts were raised. [`Access::spawn_watcher`] runs it
    /// every second; it reads the homes to look at from the log, so a
    /// restarted server watches the doors opened before it stopped.
    pub async fn watch(&self, now: DateTime<Utc>) -> Result<u32, Status> {
        let (homes, ended) = self.open_doors(now).await?;
        // Grants whose window has ended are closed, for the resident to see.
        for grant_id in ended {
            let expire = GrantCommand::Expire {
                grant_id: grant_id.clone(),
                now,
            };
            self.grant(&grant_id, expire, now).await?;
        }
        let mut raised = 0;
        for home_id in homes {
            let command = HomeCommand::Watch {
                home_id: home_id.clone(),
                now,
                relock_within: RELOCK_WITHIN,
                heartbeat_max_age: CAMERA_HEARTBEAT_MAX_AGE,
            };
            let decided = self.home(&home_id, command, EventId::new(), now).await?;
            raised += decided.events.len() as u32;
        }
        Ok(raised)
    }

    /// Homes whose last lock report left the door unlocked, and open grants
    /// whose window has ended by `now`: read from the log once, then kept by
    /// this service's own decisions.
    async fn open_doors(
        &self,
        now: DateTime<Utc>,
    ) -> Result<(BTreeSet<HomeId>, Vec<GrantId>), Status> {
        let mut seen = self.open.lock().await;
        while !seen.recovered {
            let batch = self.log.read_all(seen.after, 4096).await.map_err(failed)?;
            let Some(last) = batch.last() else {
                seen.recovered = true;
                break;
            };
            seen.after = last.position;
            for r in &batch {
                match (r.stream.category(), r.decode()) {
                    (threshold_domain::Category::Grant, Ok(DomainEvent::Grant(e))) => {
                        if let Ok(id) = GrantId::new(r.stream.id()) {
                            seen.grant(id, &e);
                        }
                    }
                    (threshold_domain::Category::Home, Ok(DomainEvent::Home(e))) => {
                        if let Ok(home) = HomeId::new(r.stream.id()) {
                            seen.home(home, &e);
                        }
                    }
                    _ => {}
                }
            }
        }
        let ended = seen
            .grants
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(id, _)| id.clone())
            .collect();
        Ok((seen.homes.clone(), ended))
    }

    /// Runs [`Access::watch`] every `every` on the server's clock until the
    /// runtime stops. A simulation has no one clock to watch on (each
    /// request carries its own time), so a simulation's server does not run
    /// it: there the locks' own reports (door left open, camera offline)
    /// raise the alerts, and tests call [`Access::watch`] with the time.
    pub fn spawn_watcher(&self, every: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let access = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = access.watch(Utc::now()).await {
                    tracing::warn!(error = %e.message(), "watching open doors");
                }
            }
        })
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

    /// Moves a grant's geofence center into its seal, under the resident's
    /// key, bound to the grant.
    fn seal_center(&self, issued: &mut pb::GrantIssued) -> Result<(), Status> {
        let Some(vault) = &self.vault else {
            return Ok(());
        };
        let Some(fence) = issued.geofence.as_mut() else {
            return Ok(());
        };
        let Some(center) = fence.center.take() else {
            return Ok(());
        };
        if !(-90.0..=90.0).contains(&center.latitude)
            || !(-180.0..=180.0).contains(&center.longitude)
        {
            return Err(field(
                "geofence.center",
                format!(
                    "{}, {} is not a WGS84 position",
                    center.latitude, center.longitude
                ),
            ));
        }
        if issued.resident_ref.trim().is_empty() {
            return Err(field("resident_ref", "is missing"));
        }
        let subject = resident_subject(&issued.resident_ref);
        let context = format!("grant/{}", issued.grant_id);
        let sealing = |e: threshold_privacy::Error| Status::internal(e.to_string());
        fence.center_digest = vault
            .digest(&subject, &center.encode_to_vec())
            .map_err(sealing)?;
        fence.sealed_center = Some(
            vault
                .seal_message(&subject, &context, &center)
                .map_err(sealing)?,
        );
        Ok(())
    }

    /// A grant's geofence center: clear, or opened from its seal (`None`
    /// once the resident was forgotten).
    fn center_of(&self, issued: &pb::GrantIssued) -> Result<Option<pb::GeoPoint>, Status> {
        let Some(fence) = &issued.geofence else {
            return Ok(None);
        };
        if let Some(c) = fence.center {
            return Ok(Some(c));
        }
        let (Some(sealed), Some(vault)) = (&fence.sealed_center, &self.vault) else {
            return Ok(None);
        };
        vault
            .unseal_message::<pb::GeoPoint>(sealed, &format!("grant/{}", issued.grant_id))
            .map_err(|e| Status::data_loss(format!("grant/{}: {e}", issued.grant_id)))
    }

    /// As a tonic service, ready to add to a server.
    pub fn into_server(self) -> AccessServiceServer<Self> {
        AccessServiceServer::new(self).max_decoding_message_size(64 * 1024)
    }

    /// Decides a grant command as the grant's single writer in this process.
    /// Events are stamped with `now`, the time the decision was made on.
    async fn grant(
        &self,
        grant_id: &GrantId,
        command: GrantCommand,
        now: DateTime<Utc>,
    ) -> Result<(Vec<pb::grant_event::Event>, u64), Status> {
        let stream = StreamId::grant(grant_id);
        let decided = self
            .writers
            .run(
                &stream,
                decide::<Grant, _>(
                    &*self.log,
                    &stream,
                    &command,
                    |e| match e {
                        DomainEvent::Grant(g) => Some(g),
                        _ => None,
                    },
                    DomainEvent::Grant,
                    |_| (EventId::new(), now),
                ),
            )
            .await
            .map_err(undecided)?;
        let (events, version) = (decided.events, decided.version);
        let mut watched = self.open.lock().await;
        for e in &events {
            watched.grant(grant_id.clone(), e);
        }
        Ok((events, version))
    }
}

/// The domain's refusals as gRPC status: the one place they are mapped.
fn refused(e: DomainError) -> Status {
    match e {
        DomainError::Invalid { .. } | DomainError::Decode { .. } => {
            Status::invalid_argument(e.to_string())
        }
        DomainError::NotFound(_) => Status::not_found(e.to_string()),
        DomainError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        DomainError::InvalidState { .. } => Status::failed_precondition(e.to_string()),
    }
}

fn failed(e: LogError) -> Status {
    match e {
        LogError::DiskFull { .. } => Status::resource_exhausted(e.to_string()),
        LogError::Closed | LogError::Kafka { .. } => Status::unavailable(e.to_string()),
        LogError::Invalid { .. } | LogError::EventIdReused { .. } => {
            Status::invalid_argument(e.to_string())
        }
        _ => Status::internal(e.to_string()),
    }
}

fn field(name: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{name}: {e}"))
}

fn undecided(e: DecideError) -> Status {
    match e {
        DecideError::Refused(e) => refused(e),
        DecideError::Log(e) => failed(e),
        DecideError::Contended(_) => Status::aborted(e.to_string()),
    }
}

#[tonic::async_trait]
impl AccessService for Access {
    async fn issue_grant(
        &self,
        request: Request<IssueGrantRequest>,
    ) -> Result<Response<GrantReply>, Status> {
        let resident = threshold_auth::require(&request, &[Role::Resident])?.clone();
        let now = self.now(&request)?;
        let r = request.into_inner();
        resident.check_tenant("resident", &r.resident_ref)?;
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
        let country = Country::from_proto(r.country).map_err(|e| field("country", e))?;
        let start = parse_local("window_start_local", &r.window_start_local).map_err(refused)?;
        let end = parse_local("window_end_local", &r.window_end_local).map_err(refused)?;
        let window = local_window(country, start, end).map_err(refused)?;
        let issued = pb::GrantIssued {
            grant_id: r.grant_id.clone(),
            home_id: r.home_id,
            parcel_ids: r.parcel_ids,
            resident_ref: r.resident_ref,
            window: Some(window),
            scope: r.scope,
            geofence: r.geofence,
            conditions: r.conditions,
            fallback: r.fallback,
        };
        let mut issued = issued;
        self.seal_center(&mut issued)?;
        let (events, version) = self
            .grant(&grant_id, GrantCommand::Issue(Box::new(issued)), now)
            .await?;
        Ok(Response::new(GrantReply {
            grant_id: r.grant_id,
            version,
            unchanged: events.is_empty(),
        }))
    }

    async fn revoke_grant(
        &self,
        request: Request<RevokeGrantRequest>,
    ) -> Result<Response<GrantReply>, Status> {
        // The resident, or the carrier's planner on the resident's behalf.
        let caller = threshold_auth::require(&request, &[Role::Resident, Role::Planner])?.clone();
        let now = self.now(&request)?;
        let r = request.into_inner();
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
        if caller.role == Role::Resident {
            self.check_resident(&caller, &grant_id).await?;
        }
        let revoke = GrantCommand::Revoke {
            grant_id: grant_id.clone(),
            by: r.by,
            reason: r.reason,
        };
        let (events, version) = self.grant(&grant_id, revoke, now).await?;
        Ok(Response::new(GrantReply {
            grant_id: r.grant_id,
            version,
            unchanged: events.is_empty(),
        }))
    }

    async fn authorize_unlock(
        &self,
        request: Request<AuthorizeUnlockRequest>,
    ) -> Result<Response<AuthorizeUnlockReply>, Status> {
        let handheld = threshold_auth::require(&request, &[Role::Handheld])?.clone();
        // The server's clock (or the simulation's), never the handheld's.
        let now = self.now(&request)?;
        let r = request.into_inner();
        handheld.check_tenant("driver", &r.driver_id)?;
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
        let parcel_id = ParcelId::new(&r.parcel_id).map_err(|e| field("parcel_id", e))?;
        let driver_id = DriverId::new(&r.driver_id).map_err(|e| field("driver_id", e))?;
        // What the other streams say is read first; the grant's own rules
        // and the recording are one decision under the grant's writer.
        let grant = self.load_grant(&grant_id).await?;
        let elsewhere = match &grant.issued {
            Some(issued) => {
                self.refusal_elsewhere(issued, &r, &parcel_id, &driver_id, now)
                    .await?
            }
            None => None,
        };
        let command = GrantCommand::AuthorizeUnlock {
            grant_id: grant_id.clone(),
            parcel_id,
            driver_id,
            now,
            nonce: uuid::Uuid::new_v4().to_string(),
            valid_for: UNLOCK_VALID_FOR,
            elsewhere,
        };
        let (events, _) = self.grant(&grant_id, command, now).await?;
        use pb::grant_event::Event as G;
        let reply = match events.first() {
            Some(G::UnlockAuthorized(a)) => AuthorizeUnlockReply {
                authorized: true,
                nonce: a.nonce.clone(),
                valid_until: a.valid_until,
                ..Default::default()
            },
            Some(G::UnlockDenied(d)) => AuthorizeUnlockReply {
                authorized: false,
                reason: d.reason,
                detail: d.detail.clone(),
                fallback: grant.fallback() as i32,
                ..Default::default()
            },
            other => return Err(Status::internal(format!("unexpected decision {other:?}"))),
        };
        let reason = if reply.authorized {
            String::new()
        } else {
            reason_name(reply.reason)
        };
        self.authorizations.add(
            1,
            &[
                opentelemetry::KeyValue::new(
                    "result",
                    if reply.authorized {
                        "authorized"
                    } else {
                        "denied"
                    },
                ),
                opentelemetry::KeyValue::new("reason", reason),
            ],
        );
        Ok(Response::new(reply))
    }

    async fn redeem_unlock(
        &self,
        request: Request<RedeemUnlockRequest>,
    ) -> Result<Response<RedeemUnlockReply>, Status> {
        let vendor = threshold_auth::require(&request, &[Role::LockVendor])?.clone();
        let now = self.now(&request)?;
        let r = request.into_inner();
        let home_id = HomeId::new(&r.home_id).map_err(|e| field("home_id", e))?;
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
        let (home, _) = self.load_home(&home_id).await?;
        let lock = home
            .lock
            .as_ref()
            .ok_or_else(|| Status::not_found(format!("home/{home_id} has no registered lock")))?;
        vendor.check_tenant("the lock vendor", &lock.vendor)?;
        if lock.lock_id != r.lock_id {
            return Err(field(
                "lock_id",
                format!("{:?} is not the lock of home/{home_id}", r.lock_id),
            ));
        }
        let grant = self.load_grant(&grant_id).await?;
        if grant.home_id().is_some_and(|h| h != home_id.as_str()) {
            return Err(field(
                "grant_id",
                format!("grant/{grant_id} does not open home/{home_id}"),
            ));
        }
        // A bad signature is recorded on the grant as a refused attempt to
        // get in: it is not a fact of the lock's.
        let signed = r.verify(&lock.public_key).is_ok();
        let command = GrantCommand::Redeem {
            grant_id: grant_id.clone(),
            nonce: r.nonce.clone(),
            lock_id: r.lock_id.clone(),
            now,
            signed,
        };
        let (events, _) = self.grant(&grant_id, command, now).await?;
        use pb::grant_event::Event as G;
        let reply = match events.first() {
            Some(G::Used(_)) => RedeemUnlockReply {
                open: true,
                ..Default::default()
            },
            Some(G::UnlockDenied(d)) => RedeemUnlockReply {
                open: false,
                reason: d.reason,
                detail: d.detail.clone(),
            },
            other => return Err(Status::internal(format!("unexpected decision {other:?}"))),
        };
        self.authorizations.add(
            1,
            &[
                opentelemetry::KeyValue::new(
                    "result",
                    if reply.open {
                        "redeemed"
                    } else {
                        "redeem_refused"
                    },
                ),
                opentelemetry::KeyValue::new(
                    "reason",
                    if reply.open {
                        String::new()
                    } else {
                        reason_name(reply.reason)
                    },
                ),
            ],
        );
        Ok(Response::new(reply))
    }

    async fn get_receipt(
        &self,
        request: Request<ReceiptRequest>,
    ) -> Result<Response<Receipt>, Status> {
        let resident = threshold_auth::require(&request, &[Role::Resident])?.clone();
        let r = request.into_inner();
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
        let parcel_id = ParcelId::new(&r.parcel_id).map_err(|e| field("parcel_id", e))?;
        let grant = self.check_resident(&resident, &grant_id).await?;
        let home_id = grant
            .home_id()
            .ok_or_else(|| Status::not_found(format!("grant/{grant_id}")))
            .and_then(|h| HomeId::new(h).map_err(|e| Status::internal(e.to_string())))?;
        let nonce = grant.redeemed(parcel_id.as_str()).ok_or_else(|| {
            Status::failed_precondition(format!(
                "no unlock was redeemed for {parcel_id} under grant/{grant_id}"
            ))
        })?;
        let (_, history) = self.load_home(&home_id).await?;
        let entry = threshold_domain::home::entry(
            history.iter().filter_map(|e| match e.decode() {
                Ok(DomainEvent::Home(h)) => Some((h, e.event.occurred_at)),
                _ => None,
            }),
            nonce,
        )
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "home/{home_id}'s lock has not reported opening for {parcel_id}"
            ))
        })?;
        let relocked_at = entry.relocked_at.ok_or_else(|| {
            Status::failed_precondition(format!(
                "home/{home_id}'s lock has not reported the relock after the entry for {parcel_id}"
            ))
        })?;
        let head = audit::verify(&history).map_err(|b| {
            Status::data_loss(format!("home/{home_id}'s audit chain does not hold: {b}"))
        })?;
        Ok(Response::new(Receipt {
            home_id: home_id.to_string(),
            grant_id: grant_id.to_string(),
            parcel_id: parcel_id.to_string(),
            lock_id: entry.lock_id,
            unlocked_at: Some(timestamp(entry.unlocked_at)),
            relocked_at: Some(timestamp(relocked_at)),
            clip_sha256: entry.clips,
            alerts: entry.alerts,
            chain_head: audit::hex(&head),
            chain_version: history.last().map_or(0, |e| e.stream_version),
        }))
    }

    async fn clock(&self, request: Request<ClockRequest>) -> Result<Response<ClockReply>, Status> {
        threshold_auth::require(&request, &Role::ALL)?;
        Ok(Response::new(ClockReply {
            now: Some(timestamp(Utc::now())),
            simulated: self.clock == Clock::Simulated,
        }))
    }

    async fn record_device_event(
        &self,
        request: Request<DeviceEventRequest>,
    ) -> Result<Response<DeviceEventReply>, Status> {
        let vendor = threshold_auth::require(&request, &[Role::LockVendor])?.clone();
        let r = request.into_inner();
        let event_id: EventId = r.event_id.parse().map_err(|e| field("event_id", e))?;
        let home_id = HomeId::new(&r.home_id).map_err(|e| field("home_id", e))?;
        let at = r
            .occurred_at
            .as_ref()
            .ok_or_else(|| field("occurred_at", "is missing"))
            .and_then(|t| instant(t).map_err(|e| field("occurred_at", e)))?;
        let (home, history) = self.load_home(&home_id).await?;
        // A resend is answered with where the original is.
        if let Some(found) = history.iter().find(|e| e.event.event_id == event_id) {
            return Ok(Response::new(DeviceEventReply {
                position: found.position.0,
                duplicate: true,
                alerts_raised: Vec::new(),
            }));
        }
        use pb::home_event::Event as H;
        let event = r
            .event
            .as_ref()
            .and_then(|e| e.event.clone())
            .ok_or_else(|| field("event", "is missing"))?;
        // A vendor speaks for its own locks.
        match (&home.lock, &event) {
            (_, H::LockRegistered(x)) => vendor.check_tenant("the lock vendor", &x.vendor)?,
            (Some(lock), _) => vendor.check_tenant("the lock vendor", &lock.vendor)?,
            (None, _) => {}
        }
        if let (Some(lock), H::LockRegistered(_)) = (&home.lock, &event) {
            vendor.check_tenant("the lock vendor", &lock.vendor)?;
        }
        // Signed by the home's registered key; a first registration by the
        // key it registers.
        let key = match (&home.lock, &event) {
            (Some(lock), _) => lock.public_key.clone(),
            (None, H::LockRegistered(x)) => x.public_key.clone(),
            (None, _) => {
                return Err(Status::not_found(format!(
                    "home/{home_id} has no registered lock"
                )));
            }
        };
        r.verify(&key).map_err(|why| {
            Status::permission_denied(format!(
                "signature: {why} (home/{home_id}); the event is not recorded"
            ))
        })?;
        let h = home_id.clone();
        let command = match event {
            H::LockRegistered(x) => HomeCommand::RegisterLock(x),
            H::Unlocked(fact) => {
                let redeemed = if fact.grant_id.is_empty() {
                    false
                } else {
                    let grant_id =
                        GrantId::new(&fact.grant_id).map_err(|e| field("grant_id", e))?;
                    let grant = self.load_grant(&grant_id).await?;
                    grant.home_id() == Some(home_id.as_str()) && grant.spent.contains(&fact.nonce)
                };
                HomeCommand::Unlocked {
                    home_id: h,
                    fact,
                    redeemed,
                }
            }
            H::Relocked(fact) => HomeCommand::Relocked { home_id: h, fact },
            H::HandleChecked(fact) => HomeCommand::HandleChecked { home_id: h, fact },
            H::DoorLeftOpen(fact) => HomeCommand::DoorLeftOpen { home_id: h, fact },
            H::CameraOnline(fact) => HomeCommand::CameraOnline { home_id: h, fact },
            H::CameraOffline(fact) => HomeCommand::CameraOffline { home_id: h, fact },
            H::ClipRecorded(fact) => HomeCommand::ClipRecorded { home_id: h, fact },
            H::TamperDetected(fact) => HomeCommand::TamperDetected { home_id: h, fact },
            H::Alarm(fact) => HomeCommand::Alarm { home_id: h, fact },
            H::AlertRaised(_) => {
                return Err(field(
                    "event",
                    "alerts are raised by the server, not reported by devices",
                ));
            }
        };
        let decided = self.home(&home_id, command, event_id, at).await?;
        Ok(Response::new(DeviceEventReply {
            position: decided.positions.first().copied().unwrap_or(0),
            duplicate: decided.positions.is_empty(),
            alerts_raised: decided
                .events
                .iter()
                .filter_map(|e| match e {
                    pb::home_event::Event::AlertRaised(a) => Some(a.kind),
                    _ => None,
                })
                .collect(),
        }))
    }
}

/// The vault subject a resident's data is sealed under.
pub fn resident_subject(resident_ref: &str) -> String {
    format!("resident:{resident_ref}")
}

/// `UNLOCK_DENY_REASON_OUTSIDE_GEOFENCE` as `outside_geofence`.
pub fn reason_name(reason: i32) -> String {
    pb::UnlockDenyReason::try_from(reason)
        .map_or("unknown", |r| r.as_str_name())
        .trim_start_matches("UNLOCK_DENY_REASON_")
        .to_lowercase()
}
