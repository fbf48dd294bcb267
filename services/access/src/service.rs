//! The tonic service: each RPC authenticates its caller, checks the
//! request's shape, has the streams loaded and decided ([`crate::streams`])
//! and answers. Errors answer with the workspace's one contract
//! ([`threshold_status`]).
//!
//! It must never decide what a grant or home allows: the aggregates and
//! [`threshold_domain::entry`] do.

use chrono::Utc;
use threshold_api::v1::access_service_server::AccessService;
use threshold_api::v1::{
    AuthorizeUnlockReply, AuthorizeUnlockRequest, ClaimHomeReply, ClaimHomeRequest, ClockReply,
    ClockRequest, DeviceEventReply, DeviceEventRequest, GrantReply, IssueGrantRequest, Receipt,
    ReceiptRequest, RedeemUnlockReply, RedeemUnlockRequest, RevokeGrantRequest,
};
use threshold_auth::Role;
use threshold_domain::country::{instant, local_window, parse_local, timestamp};
use threshold_domain::enrolment::{MAX_REFUSED_CLAIMS, binding_refusal};
use threshold_domain::grant::Command as GrantCommand;
use threshold_domain::grant::refusal_explanation;
use threshold_domain::home::{Command as HomeCommand, Home, device_time};
use threshold_domain::{Country, DomainError, DriverId, EventId, GrantId, HomeId, ParcelId, pb};
use threshold_log::audit;
use threshold_status::{field, status, stored};
use tonic::{Code, Request, Response, Status};

use crate::device::Signed;
use crate::enrolment::claim_digest;
use crate::{Access, Clock, UNLOCK_VALID_FOR};

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
        let home_id = HomeId::new(&r.home_id).map_err(|e| field("home_id", e))?;
        let country = Country::from_proto(r.country).map_err(|e| field("country", e))?;
        let start = parse_local("window_start_local", &r.window_start_local).map_err(status)?;
        let end = parse_local("window_end_local", &r.window_end_local).map_err(status)?;
        let window = local_window(country, start, end).map_err(status)?;
        if let Some(starts) = window.start_utc.as_ref().and_then(|t| instant(t).ok())
            && starts > now + threshold_domain::grant::MAX_AHEAD
        {
            return Err(field(
                "window_start_local",
                format!(
                    "starts more than {} days ahead",
                    threshold_domain::grant::MAX_AHEAD.num_days()
                ),
            ));
        }
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
        // Its shape first, so that a malformed grant (or one naming more
        // parcels than a grant may) reads no stream.
        threshold_domain::grant::validate_issued(&issued).map_err(status)?;
        // Who the home and the parcels belong to, read from their streams
        // for the grant's decision: the domain binds them.
        let (home, _) = self.load_home(&home_id).await?;
        let bound = self.bound(&home, &issued.parcel_ids).await?;
        // The domain refuses it below; a refusal for who asked is counted
        // and logged here, for the carrier to see attempts on homes.
        if let Some(refused) = binding_refusal(&issued, &bound) {
            self.refused(refused.name(), &issued.home_id, &issued.resident_ref);
        } else if let Some(lock) = &home.lock
            && lock.country != r.country
        {
            // The window is in the home's own time, not one the request
            // names. Told only to the resident whose home it is: to anyone
            // else it would say where another's home is.
            let at = Country::from_proto(lock.country)
                .map_or_else(|_| "another country".to_owned(), |c| c.code().to_owned());
            return Err(field(
                "country",
                format!(
                    "the home is in {at}: a grant's window is in the home's own time, not {}",
                    country.code()
                ),
            ));
        }
        let issue = GrantCommand::Issue {
            grant: Box::new(issued),
            bound,
        };
        let (events, version) = self.grant(&grant_id, &issue, now).await?;
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
        // A resident revokes as itself: the record says who, not the request.
        if caller.role == Role::Resident {
            self.check_resident(&caller, &grant_id).await?;
        }
        let by = if caller.role == Role::Resident && caller.tenant != threshold_auth::ANY_TENANT {
            if !r.by.is_empty() && r.by != caller.tenant {
                return Err(field(
                    "by",
                    format!("a resident revokes as itself, {:?}", caller.tenant),
                ));
            }
            caller.tenant.clone()
        } else {
            r.by
        };
        let revoke = GrantCommand::Revoke {
            grant_id: grant_id.clone(),
            by,
            reason: r.reason,
        };
        let (events, version) = self.grant(&grant_id, &revoke, now).await?;
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
        // No grant when read, so nothing around it was checked: nothing is
        // decided on it. (A grant issued since would otherwise be decided
        // on with every check of the route, scan, geofence and camera
        // skipped. An issued grant never changes, so the checks made on
        // the one read hold for the one decided on.)
        let Some(issued) = &grant.issued else {
            return Err(status(DomainError::NotFound(format!("grant/{grant_id}"))));
        };
        let elsewhere = self
            .refusal_elsewhere(issued, &r, &parcel_id, &driver_id, now)
            .await?;
        let command = GrantCommand::AuthorizeUnlock {
            grant_id: grant_id.clone(),
            parcel_id,
            driver_id,
            now,
            nonce: uuid::Uuid::new_v4().to_string(),
            valid_for: UNLOCK_VALID_FOR,
            elsewhere,
        };
        use pb::grant_event::Event as G;
        let reply = match self
            .decision(&grant_id, command, now, &handheld.name)
            .await?
        {
            G::UnlockAuthorized(a) => AuthorizeUnlockReply {
                authorized: true,
                nonce: a.nonce.clone(),
                valid_until: a.valid_until,
                ..Default::default()
            },
            // The refused driver learns the reason, never the grant's
            // details: those stay in the `UnlockDenied` event.
            // Another driver is not told the resident's fallback either.
            G::UnlockDenied(d) => AuthorizeUnlockReply {
                authorized: false,
                reason: d.reason,
                detail: explanation(d.reason),
                fallback: if d.reason == pb::UnlockDenyReason::WrongDriver as i32 {
                    pb::Fallback::Unspecified as i32
                } else {
                    grant.fallback() as i32
                },
                ..Default::default()
            },
            _ => return Err(undecided()),
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
        use pb::grant_event::Event as G;
        let reply = match self.decision(&grant_id, command, now, &vendor.name).await? {
            G::Used(_) => RedeemUnlockReply {
                open: true,
                ..Default::default()
            },
            G::UnlockDenied(d) => RedeemUnlockReply {
                open: false,
                reason: d.reason,
                detail: explanation(d.reason),
            },
            _ => return Err(undecided()),
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

    async fn claim_home(
        &self,
        request: Request<ClaimHomeRequest>,
    ) -> Result<Response<ClaimHomeReply>, Status> {
        let resident = threshold_auth::require(&request, &[Role::Resident])?.clone();
        let now = self.now(&request)?;
        let r = request.into_inner();
        resident.check_tenant("resident", &r.resident_ref)?;
        let home_id = HomeId::new(&r.home_id).map_err(|e| field("home_id", e))?;
        let digest = claim_digest(&r.claim_code)?;
        let resident_ref = r.resident_ref;
        let claim = HomeCommand::Claim {
            home_id: home_id.clone(),
            resident_ref: resident_ref.clone(),
            claim_digest: digest,
        };
        let decided = self
            .home(&home_id, claim, EventId::new(), now)
            .await
            .inspect_err(|e| {
                if matches!(e.code(), Code::PermissionDenied | Code::FailedPrecondition) {
                    self.refused("claim_refused_unrecorded", home_id.as_str(), &resident_ref);
                }
            })?;
        if matches!(
            decided.events.first(),
            Some(pb::home_event::Event::ClaimRefused(_))
        ) {
            // Recorded; the caller is told only that it does not match, and
            // when that was the last try the code had.
            self.refused("claim_code_mismatch", home_id.as_str(), &resident_ref);
            let (home, _) = self.load_home(&home_id).await?;
            let mut message = "claim_code: does not match".to_owned();
            if !home.claim_code_live_for(&resident_ref) {
                message.push_str(&format!(
                    "; {MAX_REFUSED_CLAIMS} refused claims void the code for you: ask the lock \
                     vendor for a new one"
                ));
            }
            return Err(Status::permission_denied(message));
        }
        Ok(Response::new(ClaimHomeReply {
            home_id: home_id.to_string(),
            version: decided.version,
            unchanged: decided.events.is_empty(),
        }))
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
            .and_then(|h| HomeId::new(h).map_err(stored))?;
        let nonce = grant.redeemed(parcel_id.as_str()).ok_or_else(|| {
            Status::failed_precondition(format!(
                "no unlock was redeemed for {parcel_id} under grant/{grant_id}"
            ))
        })?;
        let (_, history) = self.load_home(&home_id).await?;
        let entry = threshold_domain::home::entry(threshold_log::recorded::<Home>(&history), nonce)
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
        // The server's clock (or the simulation's) bounds the device's.
        let now = self.now(&request)?;
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
                claim_code: String::new(),
            }));
        }
        use pb::home_event::Event as H;
        let event = r
            .event
            .as_ref()
            .and_then(|e| e.event.clone())
            .ok_or_else(|| field("event", "is missing"))?;
        // A payload naming a home names this one: the vendor is told both,
        // its own data.
        if let H::LockRegistered(x) = &event
            && x.home_id != home_id.as_str()
        {
            return Err(field(
                "event.lock_registered.home_id",
                format!(
                    "names home {:?}, but the event is sent for home {home_id}",
                    x.home_id
                ),
            ));
        }
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
        // A signed report dated too far from the server's clock is refused,
        // and recorded as an alert where there is a home to record it on;
        // one dated ahead is recorded at the server's time.
        let at = match device_time(at, now) {
            Ok(at) => at,
            Err(refused) => {
                if home.lock.is_some() {
                    let skewed = HomeCommand::DeviceClockSkewed {
                        home_id: home_id.clone(),
                        occurred_at: at,
                        now,
                    };
                    self.home(&home_id, skewed, EventId::new(), now).await?;
                }
                // The message starts with the field's name, as every
                // malformed field's does.
                return Err(match refused {
                    DomainError::Invalid {
                        field: name,
                        reason,
                    } => field(name, reason),
                    other => status(other),
                });
            }
        };
        let h = home_id.clone();
        let mut code = None;
        let command = match event {
            H::LockRegistered(mut x) => {
                code = Some(self.enrol(&home_id, &mut x)?);
                HomeCommand::RegisterLock {
                    home_id: h,
                    registration: Box::new(x),
                }
            }
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
            H::AlertRaised(_) | H::Claimed(_) | H::ClaimRefused(_) => {
                return Err(field(
                    "event",
                    "alerts and claims are recorded by the server, not reported by devices",
                ));
            }
        };
        let decided = self.home(&home_id, command, event_id, at).await?;
        // The code is given only when the registration recorded its digest:
        // not for a claimed home, nor for a registration in effect already.
        let claim_code = match (decided.events.first(), code) {
            (Some(H::LockRegistered(x)), Some(code)) if x.claim_digest == code.digest => code.shown,
            _ => String::new(),
        };
        // Nothing recorded: the fact was in effect already, or the event was
        // stored meanwhile (then its position is the original's).
        Ok(Response::new(DeviceEventReply {
            position: decided.positions.first().copied().unwrap_or(0),
            duplicate: decided.events.is_empty(),
            alerts_raised: decided
                .events
                .iter()
                .filter_map(|e| match e {
                    pb::home_event::Event::AlertRaised(a) => Some(a.kind),
                    _ => None,
                })
                .collect(),
            claim_code,
        }))
    }
}

impl Access {
    /// Counts and logs a grant or claim refused for who asked.
    fn refused(&self, reason: &'static str, home_id: &str, resident_ref: &str) {
        self.refused
            .add(1, &[opentelemetry::KeyValue::new("reason", reason)]);
        tracing::warn!(reason, home_id, resident_ref, "refused for who asked");
    }
}

/// What a refused caller is told beside `reason`: nothing of the grant's.
fn explanation(reason: i32) -> String {
    refusal_explanation(pb::UnlockDenyReason::try_from(reason).unwrap_or_default()).to_owned()
}

/// A grant decision that neither authorized nor refused: a bug, reported
/// without the grant's events.
fn undecided() -> Status {
    Status::internal("the grant's decision was neither an authorization nor a refusal")
}

/// `UNLOCK_DENY_REASON_OUTSIDE_GEOFENCE` as `outside_geofence`.
pub fn reason_name(reason: i32) -> String {
    pb::UnlockDenyReason::try_from(reason)
        .map_or("unknown", |r| r.as_str_name())
        .trim_start_matches("UNLOCK_DENY_REASON_")
        .to_lowercase()
}
