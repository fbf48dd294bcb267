//! HandheldService: drivers' handhelds stream what happens at each door.
//!
//! Each event is decided on its parcel's history, which the log holds: the
//! parcel aggregate numbers the attempt and refuses what cannot be (a
//! delivery of a parcel already delivered). Before deciding, the history is
//! searched for the event's id, so a resend is answered DUPLICATE with the
//! original's position however the parcel has moved on since. A report that
//! implies an earlier step (a delivery with no reported start) records that
//! step too, under an id derived from the handheld's, so resending stays
//! idempotent. Events of one stream are handled in order; each is
//! acknowledged only once the log has it on disk.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_server::{HandheldService, HandheldServiceServer};
use threshold_api::v1::{
    AttemptAck, DriverRoute, GetRouteRequest, GetRouteResponse, HandheldEvent, attempt_ack,
};
use threshold_auth::Role;
use threshold_domain::country::instant;
use threshold_domain::parcel::{Command, Parcel};
use threshold_domain::{
    Aggregate, DeviceId, DomainError, DomainEvent, DriverId, EventId, GrantId, ParcelId, RouteId,
    StreamId, pb,
};
use threshold_log::{Error as LogError, EventLog, ExpectedVersion, NewEvent, RecordedEvent};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

/// Appends retried when another writer changed the parcel in between.
const CONFLICT_RETRIES: usize = 5;

/// The largest handheld message accepted, in bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// How fast one handheld stream may send.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Sustained events per second on one stream.
    pub events_per_second: f64,
    /// Events one stream may send at once, e.g. an offline backlog.
    pub burst: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            events_per_second: 5_000.0,
            burst: 20_000.0,
        }
    }
}

/// Parcels whose state is kept between events; beyond this the cache starts over.
const CACHED_PARCELS: usize = 200_000;

/// A parcel as this service last saw it in the log.
#[derive(Clone)]
struct Known {
    version: u64,
    state: Parcel,
    /// Event id → (position, attempt), to answer resends.
    ids: std::collections::HashMap<EventId, (u64, u32)>,
}

/// Recently used parcels. Only ever a shortcut: every append still carries
/// the expected version, so a stale entry meets a conflict and is dropped.
type Cache = Arc<std::sync::Mutex<std::collections::HashMap<StreamId, Known>>>;

/// Acknowledgement latency and duplicates, through the OpenTelemetry API.
#[derive(Clone)]
struct Metrics {
    ack: opentelemetry::metrics::Histogram<f64>,
    results: opentelemetry::metrics::Counter<u64>,
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
    cache: Cache,
    routes: Arc<std::sync::RwLock<threshold_projections::Routes>>,
    /// Opens the sealed stop positions drivers are handed.
    vault: Option<Arc<threshold_privacy::Vault>>,
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
                eprintln!("handheld: the route projection stopped following the log: {e}");
            }
        });
        Self {
            metrics: Metrics::new(),
            log,
            limits: Limits::default(),
            cache: Cache::default(),
            routes,
            vault: None,
        }
    }

    /// With other per-stream limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Hands drivers their stops' positions, opened from their seals with
    /// `vault` (without one a sealed position is handed out sealed).
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

    /// As a tonic service, ready to add to a server, refusing messages
    /// larger than [`MAX_MESSAGE`].
    pub fn into_server(self) -> HandheldServiceServer<Self> {
        HandheldServiceServer::new(self).max_decoding_message_size(MAX_MESSAGE)
    }
}

/// A token bucket: `take` fails once a stream sends faster than its limits.
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

/// A handheld event that is not accepted, with the field at fault.
#[derive(Debug)]
struct Rejected(String);

impl Rejected {
    fn into_status(self) -> Status {
        Status::invalid_argument(self.0)
    }
}

fn field(name: &str, e: impl std::fmt::Display) -> Rejected {
    Rejected(format!("{name}: {e}"))
}

/// What the handheld said, checked for shape.
struct Checked {
    event_id: EventId,
    stream: StreamId,
    command: Command,
    occurred_at: chrono::DateTime<chrono::Utc>,
}

fn check(e: &HandheldEvent) -> Result<Checked, Rejected> {
    let event_id: EventId = e.event_id.parse().map_err(|err| field("event_id", err))?;
    let parcel = ParcelId::new(&e.parcel_id).map_err(|err| field("parcel_id", err))?;
    let driver_id = DriverId::new(&e.driver_id).map_err(|err| field("driver_id", err))?;
    let device_id = DeviceId::new(&e.device_id).map_err(|err| field("device_id", err))?;
    let route_id = if e.route_id.is_empty() {
        None
    } else {
        Some(RouteId::new(&e.route_id).map_err(|err| field("route_id", err))?)
    };
    let occurred_at = e
        .occurred_at
        .as_ref()
        .ok_or_else(|| field("occurred_at", "is missing"))
        .and_then(|t| instant(t).map_err(|err| field("occurred_at", err)))?;
    let command = match &e.report {
        None => return Err(field("report", "is missing: started, delivered or failed")),
        Some(Report::Started(_)) => Command::StartAttempt {
            route_id,
            driver_id,
            device_id,
        },
        Some(Report::Delivered(d)) => Command::Deliver {
            method: pb::DeliveryMethod::try_from(d.method)
                .ok()
                .filter(|m| *m != pb::DeliveryMethod::Unspecified)
                .ok_or_else(|| {
                    field(
                        "delivered.method",
                        format!("{} is not a delivery method", d.method),
                    )
                })?,
            driver_id,
            device_id,
            grant_id: if d.grant_id.is_empty() {
                None
            } else {
                Some(GrantId::new(&d.grant_id).map_err(|err| field("delivered.grant_id", err))?)
            },
            position: d.position,
        },
        Some(Report::Failed(f)) => Command::FailAttempt {
            reason: pb::FailureReason::try_from(f.reason)
                .ok()
                .filter(|r| *r != pb::FailureReason::Unspecified)
                .ok_or_else(|| {
                    field(
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

fn attempt_of(e: &RecordedEvent) -> u32 {
    use pb::parcel_event::Event as E;
    match e.decode() {
        Ok(DomainEvent::Parcel(E::AttemptStarted(a))) => a.attempt,
        Ok(DomainEvent::Parcel(E::Delivered(d))) => d.attempt,
        Ok(DomainEvent::Parcel(E::AttemptFailed(f))) => f.attempt,
        _ => 0,
    }
}

/// Decides and stores one handheld event; the acknowledgement to send.
/// Decides and appends one handheld event; its events carry `trace`.
async fn handle(
    log: &dyn EventLog,
    vault: Option<&threshold_privacy::Vault>,
    cache: &Cache,
    e: &HandheldEvent,
    trace: Option<&str>,
) -> Result<AttemptAck, Status> {
    let ack =
        |result: attempt_ack::Result, position: u64, attempt: u32, error: String| AttemptAck {
            event_id: e.event_id.clone(),
            sequence: e.sequence,
            result: result as i32,
            position,
            attempt,
            error,
        };
    let checked = match check(e) {
        Ok(c) => c,
        Err(Rejected(why)) => return Ok(ack(attempt_ack::Result::Rejected, 0, 0, why)),
    };
    for _ in 0..CONFLICT_RETRIES {
        let cached = cache
            .lock()
            .ok()
            .and_then(|c| c.get(&checked.stream).cloned());
        let known = match cached {
            Some(k) => k,
            None => {
                let history = log
                    .read_stream(&checked.stream, 0, usize::MAX)
                    .await
                    .map_err(status)?;
                let mut known = Known {
                    version: history.last().map_or(0, |r| r.stream_version),
                    state: Parcel::default(),
                    ids: std::collections::HashMap::new(),
                };
                for r in &history {
                    known
                        .ids
                        .insert(r.event.event_id, (r.position.0, attempt_of(r)));
                    if let DomainEvent::Parcel(p) = r.decode().map_err(status)? {
                        known.state.evolve(&p);
                    }
                }
                known
            }
        };
        if let Some((position, attempt)) = known.ids.get(&checked.event_id) {
            return Ok(ack(
                attempt_ack::Result::Duplicate,
                *position,
                *attempt,
                String::new(),
            ));
        }
        let state = &known.state;
        let events = match state.decide(&checked.command) {
            Ok(events) => events,
            Err(DomainError::Invalid { field: f, reason }) => {
                return Ok(ack(
                    attempt_ack::Result::Rejected,
                    0,
                    0,
                    format!("{f}: {reason}"),
                ));
            }
            Err(err) => {
                let why = match state.status {
                    threshold_domain::parcel::Status::Unknown => {
                        format!("{} is not manifested", checked.stream)
                    }
                    _ => err.to_string(),
                };
                return Ok(ack(attempt_ack::Result::Rejected, 0, 0, why));
            }
        };
        if let Command::Deliver {
            method: pb::DeliveryMethod::InHome,
            grant_id: Some(grant_id),
            ..
        } = &checked.command
            && let Some(why) = entry_not_closed(log, grant_id, parcel_of(&checked.stream)).await?
        {
            return Ok(ack(attempt_ack::Result::Rejected, 0, 0, why));
        }
        // Where the handheld was is where the household lives: sealed
        // under its key, like the address.
        let events: Vec<pb::parcel_event::Event> = events
            .into_iter()
            .map(|ev| seal_delivery(vault, state, &checked.stream, ev))
            .collect::<Result<_, _>>()?;
        let last = events.len().saturating_sub(1);
        let new: Vec<NewEvent> = events
            .iter()
            .enumerate()
            .map(|(i, ev)| {
                let id = if i == last {
                    checked.event_id
                } else {
                    implied_id(&checked.event_id, i)
                };
                let mut n =
                    NewEvent::new(id, &DomainEvent::Parcel(ev.clone()), checked.occurred_at)
                        .caused_by(checked.event_id.to_string(), e.device_id.clone());
                // The handheld's trace continues through the log.
                if let Some(tp) = trace {
                    n = n.traced(tp);
                }
                if let Some(m) = &state.manifest {
                    n = n.tenant(m.partner_id.clone());
                    if let Ok(c) = threshold_domain::Country::from_proto(m.country) {
                        n = n.country(c);
                    }
                }
                n
            })
            .collect();
        let attempt = match events.last() {
            Some(pb::parcel_event::Event::AttemptStarted(a)) => a.attempt,
            Some(pb::parcel_event::Event::Delivered(d)) => d.attempt,
            Some(pb::parcel_event::Event::AttemptFailed(f)) => f.attempt,
            _ => 0,
        };
        let ids: Vec<EventId> = new.iter().map(|n| n.event_id).collect();
        match log
            .append(
                &checked.stream,
                ExpectedVersion::Exactly(known.version),
                new,
            )
            .await
        {
            Ok(out) if out.acks.iter().all(|a| !a.is_duplicate()) => {
                let position = out.acks.last().map_or(0, |a| a.position().0);
                let base = known.version;
                let mut next = known;
                next.version = out.stream_version;
                for (ev, (id, a)) in events.iter().zip(ids.iter().zip(&out.acks)) {
                    next.state.evolve(ev);
                    next.ids.insert(*id, (a.position().0, attempt));
                }
                if let Ok(mut c) = cache.lock() {
                    if c.len() >= CACHED_PARCELS {
                        c.clear();
                    }
                    // Only if nobody moved the parcel on meanwhile.
                    if c.get(&checked.stream).is_none_or(|k| k.version == base) {
                        c.insert(checked.stream.clone(), next);
                    }
                }
                return Ok(ack(
                    attempt_ack::Result::Stored,
                    position,
                    attempt,
                    String::new(),
                ));
            }
            // The log knew better than the cache (an id it already had, or
            // another writer's events): forget and decide again from the log.
            Ok(_) | Err(LogError::Conflict { .. }) => {
                if let Ok(mut c) = cache.lock() {
                    c.remove(&checked.stream);
                }
                continue;
            }
            Err(LogError::EventIdReused { stored_in, .. }) => {
                return Ok(ack(
                    attempt_ack::Result::Rejected,
                    0,
                    0,
                    format!("event_id: already used for {stored_in}"),
                ));
            }
            Err(err) => return Err(status(err)),
        }
    }
    Ok(ack(
        attempt_ack::Result::Rejected,
        0,
        0,
        format!("{} kept changing; resend", checked.stream),
    ))
}

/// A delivery's position sealed under the parcel's household key, when its
/// address is sealed (a parcel manifested without a vault keeps it clear).
fn seal_delivery(
    vault: Option<&threshold_privacy::Vault>,
    state: &Parcel,
    stream: &StreamId,
    event: pb::parcel_event::Event,
) -> Result<pb::parcel_event::Event, Status> {
    let pb::parcel_event::Event::Delivered(mut d) = event else {
        return Ok(event);
    };
    let household = state
        .manifest
        .as_ref()
        .and_then(|m| m.sealed_address.as_ref())
        .map(|s| s.subject.as_str());
    if let (Some(vault), Some(household), Some(position)) = (vault, household, d.position) {
        let context = format!("{stream}/delivered");
        d.sealed_position = Some(
            vault
                .seal_message(household, &context, &position)
                .map_err(|e| Status::internal(e.to_string()))?,
        );
        d.position = None;
    }
    Ok(pb::parcel_event::Event::Delivered(d))
}

fn parcel_of(stream: &StreamId) -> &str {
    stream.id()
}

/// Why an in-home delivery under `grant_id` cannot be closed yet, if it
/// cannot: the home's lock must have opened on a nonce redeemed for the
/// parcel and reported the door locked again since.
async fn entry_not_closed(
    log: &dyn EventLog,
    grant_id: &GrantId,
    parcel: &str,
) -> Result<Option<String>, Status> {
    let history = log
        .read_stream(&StreamId::grant(grant_id), 0, usize::MAX)
        .await
        .map_err(status)?;
    let mut grant = threshold_domain::grant::Grant::default();
    for r in &history {
        if let DomainEvent::Grant(g) = r.decode().map_err(status)? {
            grant.evolve(&g);
        }
    }
    let Some(home) = grant.home_id() else {
        return Ok(Some(format!(
            "delivered.grant_id: grant/{grant_id} was never issued"
        )));
    };
    let Some(nonce) = grant.redeemed(parcel) else {
        return Ok(Some(format!(
            "no unlock was redeemed for {parcel} under grant/{grant_id}: an in-home delivery needs the door opened under the grant"
        )));
    };
    let home = threshold_domain::HomeId::new(home).map_err(|e| Status::internal(e.to_string()))?;
    let events = log
        .read_stream(&StreamId::home(&home), 0, usize::MAX)
        .await
        .map_err(status)?;
    let entry = threshold_domain::home::entry(
        events.iter().filter_map(|e| match e.decode() {
            Ok(DomainEvent::Home(h)) => Some((h, e.event.occurred_at)),
            _ => None,
        }),
        nonce,
    );
    Ok(match entry {
        None => Some(format!(
            "home/{home}'s lock has not reported opening for {parcel}"
        )),
        Some(e) if e.relocked_at.is_none() => Some(format!(
            "home/{home}'s lock has not reported the door relocked since the entry for {parcel}; an in-home delivery closes after the relock"
        )),
        Some(_) => None,
    })
}

/// The log's failures as gRPC status: the handheld keeps the event and resends.
fn status(e: LogError) -> Status {
    match e {
        LogError::DiskFull { .. } => Status::resource_exhausted(e.to_string()),
        LogError::Closed | LogError::Kafka { .. } => Status::unavailable(e.to_string()),
        _ => Status::internal(e.to_string()),
    }
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
        let driver =
            DriverId::new(&r.driver_id).map_err(|e| field("driver_id", e).into_status())?;
        if caller.role == Role::Handheld {
            caller.check_tenant("driver", driver.as_str())?;
        }
        let day = r
            .date
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("date: is missing"))
            .and_then(|d| {
                threshold_domain::country::date_from_proto(d)
                    .map_err(|e| Status::invalid_argument(format!("date: {e}")))
            })?;
        // Answer from a projection that has seen everything durable now.
        let head = self.log.head().await.map_err(status)?;
        threshold_projections::caught_up(&self.routes, head, std::time::Duration::from_secs(5))
            .await
            .map_err(|at| {
                Status::deadline_exceeded(format!(
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
        let mut inbound = request.into_inner();
        let (tx, rx) = mpsc::channel(256);
        let log = Arc::clone(&self.log);
        let cache = Arc::clone(&self.cache);
        let vault = self.vault.clone();
        let mut bucket = Bucket::new(self.limits);
        let stream_span = tracing::Span::current();
        // The stream's trace context, computed once; a span per event only
        // when the trace is recorded, so unsampled streams stay cheap.
        let stream_trace = threshold_telemetry::traceparent(&stream_span);
        let sampled = stream_trace
            .as_deref()
            .is_some_and(threshold_telemetry::sampled);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            loop {
                let event = match inbound.message().await {
                    Ok(Some(e)) => e,
                    // The handheld hung up: what it has no ack for, it
                    // resends on reconnect.
                    Ok(None) => return,
                    Err(status) => {
                        let _ = tx.send(Err(threshold_api::status::oversized(status))).await;
                        return;
                    }
                };
                if !bucket.take() {
                    let limits = bucket.limits;
                    let _ = tx
                        .send(Err(Status::resource_exhausted(format!(
                            "more than {} events/s (burst {}) on one stream; event {} and later were not stored, resend them more slowly",
                            limits.events_per_second, limits.burst, event.sequence
                        ))))
                        .await;
                    return;
                }
                let received = std::time::Instant::now();
                let (span, trace) = if sampled {
                    let span = tracing::info_span!(
                        parent: &stream_span,
                        "handheld.attempt",
                        parcel_id = %event.parcel_id,
                        device_id = %event.device_id,
                        sequence = event.sequence,
                    );
                    let trace = threshold_telemetry::traceparent(&span);
                    (span, trace)
                } else {
                    (tracing::Span::none(), stream_trace.clone())
                };
                // A handheld reports for its own driver only.
                let reply = if handheld.covers(&event.driver_id) {
                    handle(&*log, vault.as_deref(), &cache, &event, trace.as_deref())
                        .instrument(span)
                        .await
                } else {
                    Ok(AttemptAck {
                        event_id: event.event_id.clone(),
                        sequence: event.sequence,
                        result: attempt_ack::Result::Rejected as i32,
                        position: 0,
                        attempt: 0,
                        error: format!(
                            "driver_id: handheld {:?} reports for {}, not {}",
                            handheld.name, handheld.tenant, event.driver_id
                        ),
                    })
                };
                metrics.acked(&reply, received.elapsed());
                let failed = reply.is_err();
                if tx.send(reply).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
