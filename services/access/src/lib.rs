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
//! The full rules (route, scan, geofence, camera heartbeat, relock watch,
//! signed device events, audit chain) build on this.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use threshold_api::v1::access_service_server::{AccessService, AccessServiceServer};
use threshold_api::v1::{
    AuthorizeUnlockReply, AuthorizeUnlockRequest, ClockReply, ClockRequest, DeviceEventReply,
    DeviceEventRequest, GrantReply, IssueGrantRequest, RevokeGrantRequest,
};
use threshold_domain::country::{instant, local_window, parse_local, timestamp};
use threshold_domain::grant::{Command as GrantCommand, Grant};
use threshold_domain::home::{Command as HomeCommand, Home};
use threshold_domain::{
    Country, DomainError, DomainEvent, DriverId, EventId, GrantId, HomeId, ParcelId, StreamId, pb,
};
use threshold_log::{DecideError, Error as LogError, EventLog, decide, decide_chained};
use tonic::{Request, Response, Status};

/// How long an authorized unlock may be used.
pub const UNLOCK_VALID_FOR: Duration = Duration::minutes(2);

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
    authorizations: opentelemetry::metrics::Counter<u64>,
}

impl Access {
    /// A service that writes to `log`, on the server's clock.
    pub fn new(log: Arc<dyn EventLog>) -> Self {
        Self {
            log,
            writers: Writers::default(),
            clock: Clock::System,
            authorizations: opentelemetry::global::meter("threshold.access")
                .u64_counter("threshold.unlock.authorizations")
                .with_description("Unlock authorizations decided, by result and refusal reason")
                .build(),
        }
    }

    /// The same service on `clock` (a simulation's, for instance).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
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
        LogError::Closed => Status::unavailable(e.to_string()),
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
        let now = self.clock.now(&request)?;
        let r = request.into_inner();
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
        let (events, version) = self
            .grant(&grant_id, GrantCommand::Issue(issued), now)
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
        let now = self.clock.now(&request)?;
        let r = request.into_inner();
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
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
        // The server's clock (or the simulation's), never the handheld's.
        let now = self.clock.now(&request)?;
        let r = request.into_inner();
        let grant_id = GrantId::new(&r.grant_id).map_err(|e| field("grant_id", e))?;
        let command = GrantCommand::AuthorizeUnlock {
            grant_id: grant_id.clone(),
            parcel_id: ParcelId::new(&r.parcel_id).map_err(|e| field("parcel_id", e))?,
            driver_id: DriverId::new(&r.driver_id).map_err(|e| field("driver_id", e))?,
            now,
            nonce: uuid::Uuid::new_v4().to_string(),
            valid_for: UNLOCK_VALID_FOR,
        };
        let (events, _) = self.grant(&grant_id, command, now).await?;
        use pb::grant_event::Event as G;
        let reply = match events.first() {
            Some(G::UnlockAuthorized(a)) => AuthorizeUnlockReply {
                authorized: true,
                nonce: a.nonce.clone(),
                valid_until: a.valid_until,
                reason: 0,
                detail: String::new(),
            },
            Some(G::UnlockDenied(d)) => AuthorizeUnlockReply {
                authorized: false,
                nonce: String::new(),
                valid_until: None,
                reason: d.reason,
                detail: d.detail.clone(),
            },
            other => return Err(Status::internal(format!("unexpected decision {other:?}"))),
        };
        let reason = pb::UnlockDenyReason::try_from(reply.reason)
            .map_or("unknown", |r| r.as_str_name())
            .trim_start_matches("UNLOCK_DENY_REASON_")
            .to_lowercase();
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
                opentelemetry::KeyValue::new(
                    "reason",
                    if reply.authorized {
                        String::new()
                    } else {
                        reason
                    },
                ),
            ],
        );
        Ok(Response::new(reply))
    }

    async fn clock(&self, _: Request<ClockRequest>) -> Result<Response<ClockReply>, Status> {
        Ok(Response::new(ClockReply {
            now: Some(timestamp(Utc::now())),
            simulated: self.clock == Clock::Simulated,
        }))
    }

    async fn record_device_event(
        &self,
        request: Request<DeviceEventRequest>,
    ) -> Result<Response<DeviceEventReply>, Status> {
        let r = request.into_inner();
        let event_id: EventId = r.event_id.parse().map_err(|e| field("event_id", e))?;
        let home_id = HomeId::new(&r.home_id).map_err(|e| field("home_id", e))?;
        let at = r
            .occurred_at
            .as_ref()
            .ok_or_else(|| field("occurred_at", "is missing"))
            .and_then(|t| instant(t).map_err(|e| field("occurred_at", e)))?;
        let stream = StreamId::home(&home_id);
        // A resend is answered with where the original is.
        if let Some(found) = self
            .log
            .read_stream(&stream, 0, usize::MAX)
            .await
            .map_err(failed)?
            .iter()
            .find(|e| e.event.event_id == event_id)
        {
            return Ok(Response::new(DeviceEventReply {
                position: found.position.0,
                duplicate: true,
            }));
        }
        use pb::home_event::Event as H;
        let h = home_id.clone();
        let command = match r
            .event
            .and_then(|e| e.event)
            .ok_or_else(|| field("event", "is missing"))?
        {
            H::LockRegistered(x) => HomeCommand::RegisterLock(x),
            H::Unlocked(fact) => HomeCommand::Unlocked { home_id: h, fact },
            H::Relocked(fact) => HomeCommand::Relocked { home_id: h, fact },
            H::HandleChecked(fact) => HomeCommand::HandleChecked { home_id: h, fact },
            H::DoorLeftOpen(fact) => HomeCommand::DoorLeftOpen { home_id: h, fact },
            H::CameraOnline(fact) => HomeCommand::CameraOnline { home_id: h, fact },
            H::CameraOffline(fact) => HomeCommand::CameraOffline { home_id: h, fact },
            H::ClipRecorded(fact) => HomeCommand::ClipRecorded { home_id: h, fact },
            H::TamperDetected(fact) => HomeCommand::TamperDetected { home_id: h, fact },
        };
        let positions = self
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
                    |_| (event_id, at),
                ),
            )
            .await
            .map_err(undecided)?
            .positions;
        Ok(Response::new(DeviceEventReply {
            position: positions.last().copied().unwrap_or(0),
            duplicate: positions.is_empty(),
        }))
    }
}
