//! The grant and home streams as this service reads and writes them: a
//! stream loaded and folded, a command decided as the stream's single
//! writer in this process ([`crate::writers`]) through the log's one
//! decision path, and the streams around a grant read for the domain's
//! unlock rule.
//!
//! It must never hold a business rule: the aggregates and
//! [`threshold_domain::entry`] decide; this only loads and appends.

use chrono::{DateTime, Utc};
use threshold_api::v1::AuthorizeUnlockRequest;
use threshold_auth::Principal;
use threshold_domain::entry::{AroundGrant, Refusal, UnlockAsked, unlock_refusal};
use threshold_domain::grant::{Command as GrantCommand, Grant};
use threshold_domain::home::{Command as HomeCommand, Home};
use threshold_domain::parcel::Parcel;
use threshold_domain::route::Route;
use threshold_domain::{
    Aggregate, DriverId, EventId, GrantId, HomeId, ParcelId, RouteId, StreamId, pb,
};
use threshold_log::{Decided, Decision, RecordedEvent};
use threshold_status::{field, status};
use tonic::Status;

use crate::{Access, CAMERA_HEARTBEAT_MAX_AGE};

impl Access {
    /// A stream's history and the state it folds to.
    pub(crate) async fn load<A: Aggregate>(
        &self,
        stream: &StreamId,
    ) -> Result<(A, Vec<RecordedEvent>), Status> {
        threshold_log::load::<A>(&*self.log, stream)
            .await
            .map_err(status)
    }

    /// A grant's state.
    pub(crate) async fn load_grant(&self, id: &GrantId) -> Result<Grant, Status> {
        Ok(self.load::<Grant>(&StreamId::grant(id)).await?.0)
    }

    /// The grant's decision on an unlock or a redeem (`command`, asked by
    /// `caller`): the event recorded, or, for a refusal the grant does not
    /// record ([`threshold_domain::grant::Grant::records_denial`]: another
    /// driver asking again, or one reason asked past its bound), the event
    /// it would have been, read back from the grant.
    pub(crate) async fn decision(
        &self,
        grant_id: &GrantId,
        command: GrantCommand,
        now: DateTime<Utc>,
        caller: &str,
    ) -> Result<pb::grant_event::Event, Status> {
        let (events, _) = self.grant(grant_id, &command, now).await?;
        match events.into_iter().next() {
            Some(event) => Ok(event),
            None => self.unrecorded_refusal(grant_id, &command, caller).await,
        }
    }

    /// The refusal of an unlock or a redeem the grant decided but did not
    /// record, as the event it would have been: read back from the grant,
    /// whose reasons, once true, stay true. `caller` is logged, as a
    /// recorded refusal would be.
    async fn unrecorded_refusal(
        &self,
        id: &GrantId,
        command: &GrantCommand,
        caller: &str,
    ) -> Result<pb::grant_event::Event, Status> {
        let grant = self.load_grant(id).await?;
        let (reason, detail) = grant
            .unlock_refusal(command)
            .or_else(|| grant.redeem_refusal(command))
            .ok_or_else(|| {
                Status::aborted(format!(
                    "grant/{id} changed while this was decided: ask again"
                ))
            })?;
        tracing::warn!(
            grant = %id,
            caller,
            reason = reason.as_str_name(),
            "a refusal answered and not recorded: the grant holds its most, or this one already"
        );
        let (parcel_id, driver_id, nonce, lock_id) = match command {
            GrantCommand::AuthorizeUnlock {
                parcel_id,
                driver_id,
                ..
            } => (
                parcel_id.to_string(),
                driver_id.to_string(),
                String::new(),
                String::new(),
            ),
            GrantCommand::Redeem { nonce, lock_id, .. } => {
                (String::new(), String::new(), nonce.clone(), lock_id.clone())
            }
            _ => Default::default(),
        };
        Ok(pb::grant_event::Event::UnlockDenied(pb::UnlockDenied {
            parcel_id,
            driver_id,
            reason: reason as i32,
            detail,
            nonce,
            lock_id,
        }))
    }

    /// A home's state and history.
    pub(crate) async fn load_home(
        &self,
        id: &HomeId,
    ) -> Result<(Home, Vec<RecordedEvent>), Status> {
        self.load::<Home>(&StreamId::home(id)).await
    }

    /// The first refusal the streams around a grant give for an unlock now:
    /// they are read, and the domain's rule
    /// ([`threshold_domain::entry::unlock_refusal`]) decides.
    pub(crate) async fn refusal_elsewhere(
        &self,
        issued: &pb::GrantIssued,
        r: &AuthorizeUnlockRequest,
        parcel: &ParcelId,
        driver: &DriverId,
        now: DateTime<Utc>,
    ) -> Result<Option<Refusal>, Status> {
        // A request naming no route, or another than the grant's, is refused
        // before the route is looked at: it is not read.
        let scoped = issued.scope.as_ref().map_or("", |s| s.route_id.as_str());
        let route = if r.route_id.is_empty() || (!scoped.is_empty() && scoped != r.route_id) {
            Route::default()
        } else {
            let route_id = RouteId::new(&r.route_id).map_err(|e| field("route_id", e))?;
            self.load::<Route>(&StreamId::route(&route_id)).await?.0
        };
        let (parcel_state, _) = self.load::<Parcel>(&StreamId::parcel(parcel)).await?;
        let center = self.center_of(issued)?;
        let home_id = HomeId::new(&issued.home_id).map_err(|e| field("home_id", e))?;
        let (home, _) = self.load_home(&home_id).await?;
        let asked = UnlockAsked {
            route_id: &r.route_id,
            parcel_id: parcel,
            driver_id: driver,
            position: r.position.as_ref(),
            pet_acknowledged: r.pet_acknowledged,
            now,
        };
        let around = AroundGrant {
            route: &route,
            parcel: &parcel_state,
            home: &home,
            center,
            heartbeat_max_age: CAMERA_HEARTBEAT_MAX_AGE,
        };
        Ok(unlock_refusal(issued, &asked, &around))
    }

    /// The grant, if `resident` may act on it: `PERMISSION_DENIED` for
    /// another resident's grant.
    pub(crate) async fn check_resident(
        &self,
        resident: &Principal,
        id: &GrantId,
    ) -> Result<Grant, Status> {
        let grant = self.load_grant(id).await?;
        let issued = grant
            .issued
            .as_ref()
            .ok_or_else(|| Status::not_found(format!("grant/{id}")))?;
        // Refused without naming whose it is: a resident ref may be
        // personal data.
        if !resident.covers(&issued.resident_ref) {
            return Err(Status::permission_denied(format!(
                "resident {:?} acts on its own grants; grant/{id} is not one of them",
                resident.tenant
            )));
        }
        Ok(grant)
    }

    /// Decides a home command as the home's single writer in this process:
    /// the events sealed into the audit chain, the device's ones under
    /// `event_id`, alerts under fresh ids, all at `at`.
    pub(crate) async fn home(
        &self,
        home_id: &HomeId,
        command: HomeCommand,
        event_id: EventId,
        at: DateTime<Utc>,
    ) -> Result<Decided<pb::home_event::Event>, Status> {
        let stream = StreamId::home(home_id);
        let decided = self
            .writers
            .run(
                &stream,
                Decision::<Home>::new(&*self.log, &stream)
                    .chained()
                    .run(&command, |e| match e {
                        pb::home_event::Event::AlertRaised(_) => (EventId::new(), at),
                        _ => (event_id, at),
                    }),
            )
            .await
            .map_err(status)?;
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

    /// Decides a grant command as the grant's single writer in this process.
    /// Events are stamped with `now`, the time the decision was made on.
    pub(crate) async fn grant(
        &self,
        grant_id: &GrantId,
        command: &GrantCommand,
        now: DateTime<Utc>,
    ) -> Result<(Vec<pb::grant_event::Event>, u64), Status> {
        let stream = StreamId::grant(grant_id);
        let decided = self
            .writers
            .run(
                &stream,
                threshold_log::decide::<Grant>(&*self.log, &stream, command, |_| {
                    (EventId::new(), now)
                }),
            )
            .await
            .map_err(status)?;
        let (events, version) = (decided.events, decided.version);
        let mut watched = self.open.lock().await;
        for e in &events {
            watched.grant(grant_id.clone(), e);
        }
        Ok((events, version))
    }
}
