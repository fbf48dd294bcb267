//! The in-home access grant: a resident lets one courier into one home, for
//! named parcels, inside a window entered in local time.
//!
//! Every unlock decision is made here, by the grant's single writer, from the
//! grant's own history and the server's clock — passed in: this module never
//! reads a clock. A refusal is not an error: it is recorded as
//! `UnlockDenied` with its reason, so the audit shows every attempt to get
//! in. Only a grant that was never issued answers with an error, because
//! there is no stream to record the refusal on.
//!
//! The window is compared in UTC, as resolved when the grant was issued
//! ([`crate::country::local_window`]), so it stays right across DST changes.
//! Checks that need other streams (route, scan, geofence, camera, alarm) are
//! made by the caller before it asks, and handed in as the first refusal
//! they found: the grant records it like its own, after its own reasons.
//!
//! An authorization is not an entry: the home's lock must redeem its nonce
//! before it opens ([`Command::Redeem`]). Redeeming is where a nonce is
//! spent, where a revoke that arrived while the courier's handheld was
//! offline still wins, and where the parcel is used.
//!
//! A refusal's `detail` (the window's times, the scoped driver, ...) is for
//! the carrier's audit only. Whoever was refused — a driver, a lock — is
//! told the reason code and [`refusal_explanation`], which names nothing of
//! the grant's: not its window, its driver, its resident or its home.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use crate::aggregate::Aggregate;
use crate::country::{instant, timestamp, window_bounds};
use crate::enrolment::{Bound, binding_refusal};
use crate::error::{DomainError, Result, invalid};
use crate::ids::{DriverId, GrantId, HomeId, ParcelId, RouteId};
use crate::pb::{self, UnlockDenyReason as Deny, grant_event::Event};

/// A grant's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// What the resident issued; `None` before the grant exists.
    pub issued: Option<pb::GrantIssued>,
    /// Withdrawn by the resident.
    pub revoked: bool,
    /// Closed because its window ended.
    pub expired: bool,
    /// Parcels delivered under it: none of them opens the door again.
    pub used: BTreeSet<String>,
    /// Parcels an unlock was authorized for.
    pub authorized: BTreeSet<String>,
    /// Every nonce ever authorized, with what it was authorized for: each
    /// is good for one unlock.
    pub nonces: BTreeMap<String, Authorization>,
    /// Nonces a lock redeemed.
    pub spent: BTreeSet<String>,
    /// Refusals recorded on it, by reason and party (its driver, or the
    /// lock a redeem came from): how many.
    pub refused: BTreeMap<(i32, String), u32>,
    /// Drivers other than its own refused on it.
    pub wrong_drivers: BTreeSet<String>,
}

/// Refusals of one reason to one party (the grant's driver, or its home's
/// lock) recorded on a grant, at most: past them one is answered and
/// counted, not recorded (see [`Grant::records_denial`]).
pub const MAX_RECORDED_PER_REASON: u32 = 8;
/// Drivers other than the grant's own whose refusal is recorded on it (once
/// each), at most.
pub const MAX_WRONG_DRIVERS_RECORDED: usize = 64;

/// What one nonce was authorized for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The parcel.
    pub parcel_id: String,
    /// Until when the lock may redeem it.
    pub valid_until: Option<DateTime<Utc>>,
}

/// What may be asked of a grant. Every command but `Issue` names the grant
/// it is meant for, so a grant that does not exist can be named in the error.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The resident issues it, on what its home's and parcels' streams say
    /// of who they belong to ([`crate::enrolment::Bound`]): only for a home
    /// enrolled and claimed by the resident, for parcels of the home's
    /// household. Issuing the same grant again changes nothing.
    Issue {
        /// The grant.
        grant: Box<pb::GrantIssued>,
        /// Its home's enrolment and its parcels' households.
        bound: Bound,
    },
    /// A courier asks to unlock the door for a parcel, now.
    AuthorizeUnlock {
        /// The grant.
        grant_id: GrantId,
        /// The parcel being delivered.
        parcel_id: ParcelId,
        /// Who asks.
        driver_id: DriverId,
        /// The server's clock.
        now: DateTime<Utc>,
        /// A fresh server nonce for this authorization.
        nonce: String,
        /// How long the authorization may be used; never past the window.
        valid_for: Duration,
        /// The first refusal the checks on other streams found (route,
        /// scan, geofence, camera, household), if any.
        elsewhere: Option<(Deny, String)>,
    },
    /// The resident (or the carrier) withdraws it.
    Revoke {
        /// The grant.
        grant_id: GrantId,
        /// Who revoked: the resident's reference, or the carrier.
        by: String,
        /// Why.
        reason: String,
    },
    /// Close it if its window has ended by `now`.
    Expire {
        /// The grant.
        grant_id: GrantId,
        /// The server's clock.
        now: DateTime<Utc>,
    },
    /// The home's lock presents a nonce before it opens.
    Redeem {
        /// The grant.
        grant_id: GrantId,
        /// The nonce presented.
        nonce: String,
        /// The lock presenting it.
        lock_id: String,
        /// The server's clock.
        now: DateTime<Utc>,
        /// Whether the request carried a good signature of the home's key.
        signed: bool,
    },
}

/// A courier scope: only `driver` may enter, and only on `route`.
pub fn courier_scope(driver: &str, route: &str) -> pb::CourierScope {
    pb::CourierScope {
        driver_id: driver.to_owned(),
        route_id: route.to_owned(),
    }
}

/// A geofence of `radius_m` metres around `center`, in the clear (the
/// access service seals the centre under the resident's key).
pub fn geofence(center: pb::GeoPoint, radius_m: u32) -> pb::Geofence {
    pb::Geofence {
        center: Some(center),
        radius_m,
        ..Default::default()
    }
}

/// The most parcels one grant names: each is looked up to check it is the
/// home's household's.
pub const MAX_PARCELS: usize = 100;

/// The longest window a grant may open: a door is opened for a delivery,
/// not kept open to couriers for weeks (and every grant is watched until
/// its window ends).
pub const MAX_WINDOW: Duration = Duration::days(7);

/// How far ahead of now a grant's window may start.
pub const MAX_AHEAD: Duration = Duration::days(30);

/// Checks an issued grant's shape: ids, at least one parcel and at most
/// [`MAX_PARCELS`] (each once), a
/// resolved window that ends after it starts and lasts at most
/// [`MAX_WINDOW`], a courier scope naming a
/// driver, and a geofence with a center and a radius above 0 m.
pub fn validate_issued(g: &pb::GrantIssued) -> Result<()> {
    GrantId::new(&g.grant_id)?;
    HomeId::new(&g.home_id)?;
    if g.parcel_ids.is_empty() {
        return Err(invalid("parcel_ids", "a grant names at least one parcel"));
    }
    if g.parcel_ids.len() > MAX_PARCELS {
        return Err(invalid(
            "parcel_ids",
            format!(
                "names {} parcels; a grant names at most {MAX_PARCELS}",
                g.parcel_ids.len()
            ),
        ));
    }
    let mut parcels = BTreeSet::new();
    for p in &g.parcel_ids {
        ParcelId::new(p)?;
        if !parcels.insert(p.as_str()) {
            return Err(invalid("parcel_ids", format!("{p} is named twice")));
        }
    }
    let w = g
        .window
        .as_ref()
        .ok_or_else(|| invalid("window", "is missing"))?;
    let (start, end) = window_bounds(w)?;
    if end <= start {
        return Err(invalid(
            "window",
            format!("ends at {end}, not after it starts at {start}"),
        ));
    }
    if end - start > MAX_WINDOW {
        return Err(invalid(
            "window",
            format!(
                "is {} h long; a grant's window is at most {} h",
                (end - start).num_hours(),
                MAX_WINDOW.num_hours()
            ),
        ));
    }
    let scope = g
        .scope
        .as_ref()
        .ok_or_else(|| invalid("scope", "is missing"))?;
    if scope.driver_id.is_empty() {
        return Err(invalid("scope.driver_id", "is missing"));
    }
    DriverId::new(&scope.driver_id)?;
    if !scope.route_id.is_empty() {
        RouteId::new(&scope.route_id)?;
    }
    let fence = g
        .geofence
        .as_ref()
        .ok_or_else(|| invalid("geofence", "is missing"))?;
    match &fence.center {
        // Sealed: its range was checked before it was sealed.
        None if fence.sealed_center.is_some() => {}
        None => return Err(invalid("geofence.center", "is missing")),
        Some(c)
            if !(-90.0..=90.0).contains(&c.latitude)
                || !(-180.0..=180.0).contains(&c.longitude) =>
        {
            return Err(invalid(
                "geofence.center",
                format!("{}, {} is not a WGS84 position", c.latitude, c.longitude),
            ));
        }
        Some(_) => {}
    }
    if fence.radius_m == 0 {
        return Err(invalid("geofence.radius_m", "must be more than 0 m"));
    }
    if pb::Fallback::try_from(g.fallback).is_err() {
        return Err(invalid(
            "fallback",
            format!("{} is not a fallback", g.fallback),
        ));
    }
    Ok(())
}

/// Whether two issued grants are the same. A sealed center differs with
/// every sealing (a fresh nonce); its keyed digest says whether the center
/// is the same.
fn same_grant(a: &pb::GrantIssued, b: &pb::GrantIssued) -> bool {
    let unsealed = |g: &pb::GrantIssued| {
        let mut g = g.clone();
        if let Some(f) = &mut g.geofence {
            f.sealed_center = None;
        }
        g
    };
    unsealed(a) == unsealed(b)
}

/// What a refused caller is told beside the reason code: a fixed sentence
/// per reason, naming nothing of the grant (its window, its driver, its
/// resident, its home, its position) or of any other party.
pub fn refusal_explanation(reason: Deny) -> &'static str {
    match reason {
        Deny::Unspecified => "the unlock was refused",
        Deny::GrantNotFound => "there is no such grant",
        Deny::Revoked => "the grant was revoked",
        Deny::Used => "this parcel was already delivered under the grant",
        Deny::Expired => "the grant's window has ended",
        Deny::OutsideWindow => "now is outside the grant's window",
        Deny::WrongDriver => "the grant is not for this driver",
        Deny::NotOnRoute => "the parcel is not on this driver's route",
        Deny::ParcelNotScanned => "the parcel has not been scanned by this driver",
        Deny::OutsideGeofence => {
            "the handheld is not at the door, or the door's position cannot be read"
        }
        Deny::CameraOffline => "the home's camera is not online",
        Deny::CameraNotRecording => "the home's camera is not recording",
        Deny::HouseholdCondition => {
            "a household condition is not met: an alarm to be disarmed, or a pet to acknowledge"
        }
        Deny::Replayed => "the authorization was already given",
        Deny::ParcelNotInGrant => "the parcel is not in this grant",
        Deny::NonceUnknown => "the grant never authorized this nonce",
        Deny::AuthorizationExpired => "the authorization's time ran out",
        Deny::BadSignature => "the request is not signed by the home's registered key",
    }
}

impl Grant {
    /// Why an [`Command::AuthorizeUnlock`] is refused, in the order the
    /// reasons are asked, or `None` when it is authorized (or is another
    /// command, or the grant is not issued). Every reason, once true, stays
    /// true for the same request, so a refusal read from an earlier state
    /// of the grant is the one a later state gives.
    pub fn unlock_refusal(&self, command: &Command) -> Option<(Deny, String)> {
        let Command::AuthorizeUnlock {
            parcel_id,
            driver_id,
            now,
            nonce,
            elsewhere,
            ..
        } = command
        else {
            return None;
        };
        let issued = self.issued.as_ref()?;
        let (start, end) = self.window()?;
        // Another driver first: it learns nothing of the grant's state
        // (revoked, used, its window, its parcels).
        let scoped = issued.scope.as_ref().map_or("", |s| s.driver_id.as_str());
        if scoped != driver_id.as_str() {
            return Some((
                Deny::WrongDriver,
                format!("the grant is for driver {scoped}"),
            ));
        }
        // Grant-wide reasons next: after a revoke nothing opens.
        if self.revoked {
            return Some((Deny::Revoked, "the grant was revoked".into()));
        }
        if self.expired || *now >= end {
            return Some((Deny::Expired, format!("the window ended at {end}")));
        }
        if self.nonces.contains_key(nonce) {
            return Some((
                Deny::Replayed,
                format!("nonce {nonce} was already authorized"),
            ));
        }
        if self.used.contains(parcel_id.as_str()) {
            return Some((
                Deny::Used,
                format!("{parcel_id} was already delivered under this grant"),
            ));
        }
        if !issued.parcel_ids.iter().any(|p| p == parcel_id.as_str()) {
            return Some((
                Deny::ParcelNotInGrant,
                format!("{parcel_id} is not in this grant"),
            ));
        }
        if *now < start {
            return Some((Deny::OutsideWindow, format!("the window opens at {start}")));
        }
        elsewhere.clone()
    }

    /// Why a [`Command::Redeem`] is refused, in the order the reasons are
    /// asked, or `None` when the lock may open (or it is another command).
    pub fn redeem_refusal(&self, command: &Command) -> Option<(Deny, String)> {
        let Command::Redeem {
            nonce, now, signed, ..
        } = command
        else {
            return None;
        };
        if !signed {
            return Some((
                Deny::BadSignature,
                "not signed by the home's registered key".into(),
            ));
        }
        let Some(authorization) = self.nonces.get(nonce) else {
            return Some((
                Deny::NonceUnknown,
                format!("nonce {nonce} was never authorized on this grant"),
            ));
        };
        if self.spent.contains(nonce) {
            return Some((
                Deny::Replayed,
                format!("nonce {nonce} was already redeemed"),
            ));
        }
        // A revoke recorded after the authorization still wins: the
        // courier's handheld may have been offline since.
        if self.revoked {
            return Some((Deny::Revoked, "the grant was revoked".into()));
        }
        if self.expired {
            return Some((Deny::Expired, "the grant expired".into()));
        }
        if let Some(until) = authorization.valid_until
            && *now > until
        {
            return Some((
                Deny::AuthorizationExpired,
                format!("the authorization ran out at {until}"),
            ));
        }
        if self.used.contains(&authorization.parcel_id) {
            return Some((
                Deny::Used,
                format!(
                    "{} was already delivered under this grant",
                    authorization.parcel_id
                ),
            ));
        }
        None
    }

    /// Whether a refusal of `reason` to `party` (a driver, or the lock of
    /// a redeem) is recorded on the grant's stream: another driver's the
    /// first time, for at most [`MAX_WRONG_DRIVERS_RECORDED`] drivers; any
    /// other reason's [`MAX_RECORDED_PER_REASON`] times per party (only the
    /// grant's own driver and its home's lock get that far, so every kind
    /// of refusal is on record). The rest are answered the same and counted
    /// in the service's metrics, so no caller can grow a household's
    /// grant, and hold up what is decided on it, by asking.
    pub fn records_denial(&self, reason: Deny, party: &str) -> bool {
        if reason == Deny::WrongDriver {
            return self.wrong_drivers.len() < MAX_WRONG_DRIVERS_RECORDED
                && !self.wrong_drivers.contains(party);
        }
        self.refused
            .get(&(reason as i32, party.to_owned()))
            .is_none_or(|n| *n < MAX_RECORDED_PER_REASON)
    }

    /// The window's UTC bounds, once issued.
    pub fn window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.issued
            .as_ref()
            .and_then(|g| g.window.as_ref())
            .and_then(|w| window_bounds(w).ok())
    }

    /// What the resident asked to be done when the door stays shut.
    pub fn fallback(&self) -> pb::Fallback {
        self.issued
            .as_ref()
            .and_then(|g| pb::Fallback::try_from(g.fallback).ok())
            .unwrap_or(pb::Fallback::Unspecified)
    }

    /// The nonce a lock redeemed for `parcel_id`, if one did.
    pub fn redeemed(&self, parcel_id: &str) -> Option<&str> {
        self.nonces
            .iter()
            .find(|(n, a)| a.parcel_id == parcel_id && self.spent.contains(*n))
            .map(|(n, _)| n.as_str())
    }

    /// The home the grant opens.
    pub fn home_id(&self) -> Option<&str> {
        self.issued.as_ref().map(|g| g.home_id.as_str())
    }

    fn subject(&self) -> String {
        self.issued
            .as_ref()
            .map_or_else(|| "grant".into(), |g| format!("grant/{}", g.grant_id))
    }

    /// The issued grant a command is meant for, or why there is none.
    fn existing(&self, grant_id: &GrantId) -> Result<&pb::GrantIssued> {
        match &self.issued {
            None => Err(DomainError::NotFound(format!("grant/{grant_id}"))),
            Some(g) if g.grant_id != grant_id.as_str() => Err(invalid(
                "grant_id",
                format!("{grant_id} is not this grant, grant/{}", g.grant_id),
            )),
            Some(g) => Ok(g),
        }
    }

    fn refuse(&self, action: &'static str, state: impl Into<String>) -> DomainError {
        DomainError::InvalidState {
            subject: self.subject(),
            action,
            state: state.into(),
        }
    }
}

impl Aggregate for Grant {
    type Command = Command;
    type Event = Event;

    fn from_domain(event: crate::DomainEvent) -> Option<Event> {
        match event {
            crate::DomainEvent::Grant(e) => Some(e),
            _ => None,
        }
    }

    fn into_domain(event: Event) -> crate::DomainEvent {
        crate::DomainEvent::Grant(event)
    }

    fn decide(&self, command: &Command) -> Result<Vec<Event>> {
        match command {
            Command::Issue { grant: g, bound } => {
                validate_issued(g)?;
                if let Some(refused) = binding_refusal(g, bound) {
                    return Err(refused.into());
                }
                match &self.issued {
                    None => Ok(vec![Event::Issued(g.as_ref().clone())]),
                    Some(existing) if same_grant(existing, g) => Ok(vec![]),
                    Some(_) => Err(DomainError::AlreadyExists(self.subject())),
                }
            }
            Command::AuthorizeUnlock {
                grant_id,
                parcel_id,
                driver_id,
                now,
                nonce,
                valid_for,
                elsewhere: _,
            } => {
                self.existing(grant_id)?;
                if nonce.is_empty() {
                    return Err(invalid("nonce", "is empty"));
                }
                if *valid_for <= Duration::zero() {
                    return Err(invalid(
                        "valid_for",
                        format!("{valid_for} is not a positive duration"),
                    ));
                }
                let (_, end) = self
                    .window()
                    .ok_or_else(|| invalid("window", "is missing"))?;
                if let Some((reason, detail)) = self.unlock_refusal(command) {
                    if !self.records_denial(reason, driver_id.as_str()) {
                        // Answered all the same (the service reads the
                        // refusal back), not recorded again.
                        return Ok(vec![]);
                    }
                    return Ok(vec![Event::UnlockDenied(pb::UnlockDenied {
                        parcel_id: parcel_id.to_string(),
                        driver_id: driver_id.to_string(),
                        reason: reason as i32,
                        detail,
                        ..Default::default()
                    })]);
                }
                // The resident's window bounds the authorization too.
                let valid_until = (*now + *valid_for).min(end);
                Ok(vec![Event::UnlockAuthorized(pb::UnlockAuthorized {
                    parcel_id: parcel_id.to_string(),
                    driver_id: driver_id.to_string(),
                    nonce: nonce.clone(),
                    valid_until: Some(timestamp(valid_until)),
                })])
            }
            Command::Revoke {
                grant_id,
                by,
                reason,
            } => {
                let issued = self.existing(grant_id)?;
                if by.trim().is_empty() {
                    return Err(invalid("revoked_by", "is empty"));
                }
                if self.revoked {
                    return Ok(vec![]);
                }
                if self.expired {
                    return Err(self.refuse("revoke", "expired"));
                }
                if issued.parcel_ids.iter().all(|p| self.used.contains(p)) {
                    return Err(self.refuse("revoke", "every parcel was delivered under it"));
                }
                Ok(vec![Event::Revoked(pb::GrantRevoked {
                    revoked_by: by.clone(),
                    reason: reason.clone(),
                })])
            }
            Command::Expire { grant_id, now } => {
                self.existing(grant_id)?;
                let ended = self.window().is_some_and(|(_, end)| *now >= end);
                if self.expired || self.revoked || !ended {
                    return Ok(vec![]);
                }
                Ok(vec![Event::Expired(pb::GrantExpired {})])
            }
            Command::Redeem {
                grant_id,
                nonce,
                lock_id,
                ..
            } => {
                self.existing(grant_id)?;
                if nonce.is_empty() {
                    return Err(invalid("nonce", "is empty"));
                }
                if lock_id.is_empty() {
                    return Err(invalid("lock_id", "is empty"));
                }
                let authorization = self.nonces.get(nonce);
                if let Some((reason, detail)) = self.redeem_refusal(command) {
                    if !self.records_denial(reason, lock_id) {
                        return Ok(vec![]);
                    }
                    return Ok(vec![Event::UnlockDenied(pb::UnlockDenied {
                        parcel_id: authorization
                            .map(|a| a.parcel_id.clone())
                            .unwrap_or_default(),
                        reason: reason as i32,
                        detail,
                        nonce: nonce.clone(),
                        lock_id: lock_id.clone(),
                        ..Default::default()
                    })]);
                }
                let Some(authorization) = authorization else {
                    return Err(invalid("nonce", "was never authorized on this grant"));
                };
                Ok(vec![Event::Used(pb::GrantUsed {
                    parcel_id: authorization.parcel_id.clone(),
                    nonce: nonce.clone(),
                    lock_id: lock_id.clone(),
                })])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::Issued(g) => self.issued = Some(g.clone()),
            Event::UnlockAuthorized(a) => {
                self.authorized.insert(a.parcel_id.clone());
                self.nonces.insert(
                    a.nonce.clone(),
                    Authorization {
                        parcel_id: a.parcel_id.clone(),
                        valid_until: a.valid_until.as_ref().and_then(|t| instant(t).ok()),
                    },
                );
            }
            Event::UnlockDenied(d) => {
                if d.reason == Deny::WrongDriver as i32 {
                    self.wrong_drivers.insert(d.driver_id.clone());
                } else {
                    let party = if d.driver_id.is_empty() {
                        &d.lock_id
                    } else {
                        &d.driver_id
                    };
                    *self.refused.entry((d.reason, party.clone())).or_default() += 1;
                }
            }
            Event::Revoked(_) => self.revoked = true,
            Event::Expired(_) => self.expired = true,
            Event::Used(u) => {
                self.used.insert(u.parcel_id.clone());
                if !u.nonce.is_empty() {
                    self.spent.insert(u.nonce.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::{Country, local_window, parse_local};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn grant_id() -> GrantId {
        GrantId::new("g-1").unwrap()
    }

    fn issued_in(country: Country, start: &str, end: &str) -> pb::GrantIssued {
        pb::GrantIssued {
            grant_id: "g-1".into(),
            home_id: "home-1".into(),
            parcel_ids: vec!["SE-1".into(), "SE-2".into()],
            resident_ref: "res-1".into(),
            window: Some(
                local_window(
                    country,
                    parse_local("start", start).unwrap(),
                    parse_local("end", end).unwrap(),
                )
                .unwrap(),
            ),
            scope: Some(courier_scope("drv-1", "r-1")),
            geofence: Some(geofence(crate::geo::point(59.33, 18.06), 50)),
            conditions: Some(pb::HouseholdConditions::default()),
            fallback: pb::Fallback::Locker as i32,
        }
    }

    /// 09:00–12:00 Stockholm on a November Monday: 08:00–11:00 UTC.
    fn issued() -> Event {
        Event::Issued(issued_in(
            Country::Se,
            "2026-11-23T09:00",
            "2026-11-23T12:00",
        ))
    }

    fn unlock(parcel: &str, driver: &str, now: &str, nonce: &str) -> Command {
        Command::AuthorizeUnlock {
            grant_id: grant_id(),
            parcel_id: ParcelId::new(parcel).unwrap(),
            driver_id: DriverId::new(driver).unwrap(),
            now: utc(now),
            nonce: nonce.into(),
            valid_for: Duration::minutes(2),
            elsewhere: None,
        }
    }

    fn authorized(parcel: &str, nonce: &str) -> Event {
        Event::UnlockAuthorized(pb::UnlockAuthorized {
            parcel_id: parcel.into(),
            driver_id: "drv-1".into(),
            nonce: nonce.into(),
            valid_until: None,
        })
    }

    fn used(parcel: &str, nonce: &str) -> Event {
        Event::Used(pb::GrantUsed {
            parcel_id: parcel.into(),
            nonce: nonce.into(),
            lock_id: "lock-1".into(),
        })
    }

    fn revoked() -> Event {
        Event::Revoked(pb::GrantRevoked {
            revoked_by: "res-1".into(),
            reason: "plans changed".into(),
        })
    }

    fn expired() -> Event {
        Event::Expired(pb::GrantExpired {})
    }

    fn revoke() -> Command {
        Command::Revoke {
            grant_id: grant_id(),
            by: "res-1".into(),
            reason: "plans changed".into(),
        }
    }

    fn expire(now: &str) -> Command {
        Command::Expire {
            grant_id: grant_id(),
            now: utc(now),
        }
    }

    fn redeem(nonce: &str, now: &str) -> Command {
        Command::Redeem {
            grant_id: grant_id(),
            nonce: nonce.into(),
            lock_id: "lock-1".into(),
            now: utc(now),
            signed: true,
        }
    }

    /// The one denial decided, with its reason.
    fn denial(events: Vec<Event>) -> Deny {
        match events.as_slice() {
            [Event::UnlockDenied(d)] => Deny::try_from(d.reason).unwrap(),
            other => panic!("expected one denial, got {other:?}"),
        }
    }

    fn is_authorized(events: &[Event]) -> bool {
        matches!(events, [Event::UnlockAuthorized(_)])
    }

    /// Issuing `g`, on a home its resident claimed, for parcels of the
    /// home's household.
    fn issue(g: pb::GrantIssued) -> Command {
        let bound = Bound::claimed("hh-1", &g.resident_ref, g.parcel_ids.len());
        Command::Issue {
            grant: Box::new(g),
            bound,
        }
    }

    #[test]
    fn a_grant_is_refused_for_a_home_or_parcel_not_the_residents() {
        let Event::Issued(g) = issued() else {
            unreachable!()
        };
        let on = |bound: Bound| {
            given::<Grant>(&[]).decide(&Command::Issue {
                grant: Box::new(g.clone()),
                bound,
            })
        };
        let mut theirs = Bound::claimed("hh-1", "res-2", g.parcel_ids.len());
        assert!(matches!(
            on(theirs.clone()),
            Err(DomainError::Forbidden { field, .. }) if field == "home_id"
        ));
        theirs = Bound::claimed("hh-1", &g.resident_ref, g.parcel_ids.len());
        theirs.parcel_households[0] = Some("hh-2".into());
        assert!(matches!(
            on(theirs),
            Err(DomainError::Forbidden { field, .. }) if field == "parcel_ids[0]"
        ));
        assert!(matches!(
            on(Bound::default()),
            Err(DomainError::InvalidState { .. })
        ));
        assert_eq!(
            on(Bound::claimed("hh-1", &g.resident_ref, g.parcel_ids.len())).unwrap(),
            vec![Event::Issued(g.clone())]
        );
    }

    fn invalid_field(result: Result<Vec<Event>>) -> &'static str {
        match result {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_grant_is_issued_once() {
        let Event::Issued(g) = issued() else {
            unreachable!()
        };
        assert_eq!(
            given::<Grant>(&[]).decide(&issue(g.clone())).unwrap(),
            vec![issued()]
        );
        let state = given::<Grant>(&[issued()]);
        assert_eq!(
            state.window(),
            Some((utc("2026-11-23T08:00:00Z"), utc("2026-11-23T11:00:00Z")))
        );
        assert_eq!(state.decide(&issue(g.clone())).unwrap(), vec![]);
        let mut other = g;
        other.parcel_ids.push("SE-3".into());
        assert_eq!(
            state.decide(&issue(other)).unwrap_err(),
            DomainError::AlreadyExists("grant/g-1".into())
        );
    }

    #[test]
    fn issued_grants_are_validated() {
        let Event::Issued(g) = issued() else {
            unreachable!()
        };
        let mut backwards = g.window.clone().unwrap();
        std::mem::swap(&mut backwards.start_utc, &mut backwards.end_utc);
        let mut no_end = g.window.clone().unwrap();
        no_end.end_utc = None;
        let fence = |latitude, radius_m| {
            Some(pb::Geofence {
                center: Some(pb::GeoPoint {
                    latitude,
                    longitude: 18.0,
                }),
                radius_m,
                ..Default::default()
            })
        };
        let scope = |driver_id: &str| {
            Some(pb::CourierScope {
                driver_id: driver_id.into(),
                route_id: String::new(),
            })
        };
        let cases = [
            (
                "grant_id",
                pb::GrantIssued {
                    grant_id: String::new(),
                    ..g.clone()
                },
            ),
            (
                "home_id",
                pb::GrantIssued {
                    home_id: "home 1".into(),
                    ..g.clone()
                },
            ),
            (
                "parcel_ids",
                pb::GrantIssued {
                    parcel_ids: vec![],
                    ..g.clone()
                },
            ),
            (
                "parcel_ids",
                pb::GrantIssued {
                    parcel_ids: vec!["SE-1".into(), "SE-1".into()],
                    ..g.clone()
                },
            ),
            (
                "parcel_id",
                pb::GrantIssued {
                    parcel_ids: vec!["SE/1".into()],
                    ..g.clone()
                },
            ),
            (
                "window",
                pb::GrantIssued {
                    window: None,
                    ..g.clone()
                },
            ),
            (
                "parcel_ids",
                pb::GrantIssued {
                    parcel_ids: (0..=MAX_PARCELS).map(|i| format!("SE-{i}")).collect(),
                    ..g.clone()
                },
            ),
            (
                "window",
                pb::GrantIssued {
                    window: Some(backwards),
                    ..g.clone()
                },
            ),
            (
                "window.end_utc",
                pb::GrantIssued {
                    window: Some(no_end),
                    ..g.clone()
                },
            ),
            (
                "scope",
                pb::GrantIssued {
                    scope: None,
                    ..g.clone()
                },
            ),
            (
                "scope.driver_id",
                pb::GrantIssued {
                    scope: scope(""),
                    ..g.clone()
                },
            ),
            (
                "driver_id",
                pb::GrantIssued {
                    scope: scope("drv 1"),
                    ..g.clone()
                },
            ),
            (
                "geofence",
                pb::GrantIssued {
                    geofence: None,
                    ..g.clone()
                },
            ),
            (
                "geofence.radius_m",
                pb::GrantIssued {
                    geofence: fence(59.0, 0),
                    ..g.clone()
                },
            ),
            (
                "geofence.center",
                pb::GrantIssued {
                    geofence: fence(95.0, 50),
                    ..g.clone()
                },
            ),
            (
                "fallback",
                pb::GrantIssued {
                    fallback: 99,
                    ..g.clone()
                },
            ),
        ];
        for (field, broken) in cases {
            assert_eq!(
                invalid_field(given::<Grant>(&[]).decide(&issue(broken))),
                field
            );
        }
    }

    #[test]
    fn an_unlock_inside_the_window_by_the_scoped_driver_is_authorized() {
        let g = given::<Grant>(&[issued()]);
        // 10:30 Stockholm is 09:30 UTC in November.
        assert_eq!(
            g.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n-1"))
                .unwrap(),
            vec![Event::UnlockAuthorized(pb::UnlockAuthorized {
                parcel_id: "SE-1".into(),
                driver_id: "drv-1".into(),
                nonce: "n-1".into(),
                valid_until: Some(timestamp(utc("2026-11-23T09:32:00Z"))),
            })]
        );
        // An authorization never outlives the window.
        match g
            .decide(&unlock("SE-1", "drv-1", "2026-11-23T10:59:00Z", "n-2"))
            .unwrap()
            .as_slice()
        {
            [Event::UnlockAuthorized(a)] => {
                assert_eq!(a.valid_until, Some(timestamp(utc("2026-11-23T11:00:00Z"))));
            }
            other => panic!("{other:?}"),
        }
        // A second authorization for an unused parcel takes a fresh nonce.
        let g = given::<Grant>(&[issued(), authorized("SE-1", "n-1")]);
        assert!(is_authorized(
            &g.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:35:00Z", "n-2"))
                .unwrap()
        ));
    }

    #[test]
    fn a_nonce_opens_the_door_once() {
        let g = given::<Grant>(&[issued(), authorized("SE-1", "n-1")]);
        assert_eq!(g.nonces.len(), 1);
        for parcel in ["SE-1", "SE-2"] {
            assert_eq!(
                denial(
                    g.decide(&unlock(parcel, "drv-1", "2026-11-23T09:31:00Z", "n-1"))
                        .unwrap()
                ),
                Deny::Replayed
            );
        }
    }

    #[test]
    fn a_revoked_grant_opens_nothing() {
        let g = given::<Grant>(&[issued(), revoked()]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n"))
                    .unwrap()
            ),
            Deny::Revoked
        );
    }

    #[test]
    fn an_expired_grant_or_an_ended_window_opens_nothing() {
        let g = given::<Grant>(&[issued(), expired()]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n"))
                    .unwrap()
            ),
            Deny::Expired
        );
        // 12:00 Stockholm, the end of the window, is already too late.
        let g = given::<Grant>(&[issued()]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-11-23T11:00:00Z", "n"))
                    .unwrap()
            ),
            Deny::Expired
        );
    }

    #[test]
    fn a_delivered_parcel_does_not_open_the_door_again() {
        let g = given::<Grant>(&[issued(), authorized("SE-1", "n-1"), used("SE-1", "n-1")]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:40:00Z", "n-2"))
                    .unwrap()
            ),
            Deny::Used
        );
        // The other parcel of the grant still can.
        assert!(is_authorized(
            &g.decide(&unlock("SE-2", "drv-1", "2026-11-23T09:40:00Z", "n-3"))
                .unwrap()
        ));
    }

    #[test]
    fn only_the_grants_parcels_open_the_door() {
        let g = given::<Grant>(&[issued()]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-9", "drv-1", "2026-11-23T09:30:00Z", "n"))
                    .unwrap()
            ),
            Deny::ParcelNotInGrant
        );
    }

    #[test]
    fn an_unlock_before_the_window_opens_is_denied() {
        let g = given::<Grant>(&[issued()]);
        // 08:59 Stockholm.
        let events = g
            .decide(&unlock("SE-1", "drv-1", "2026-11-23T07:59:00Z", "n"))
            .unwrap();
        assert_eq!(
            events,
            vec![Event::UnlockDenied(pb::UnlockDenied {
                parcel_id: "SE-1".into(),
                driver_id: "drv-1".into(),
                reason: Deny::OutsideWindow as i32,
                detail: "the window opens at 2026-11-23 08:00:00 UTC".into(),
                ..Default::default()
            })]
        );
        // A denial records nothing that changes a later decision.
        let g = given::<Grant>(&[issued(), events[0].clone()]);
        assert!(is_authorized(
            &g.decide(&unlock("SE-1", "drv-1", "2026-11-23T08:00:00Z", "n"))
                .unwrap()
        ));
    }

    #[test]
    fn only_the_scoped_driver_is_let_in() {
        let g = given::<Grant>(&[issued()]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-2", "2026-11-23T09:30:00Z", "n"))
                    .unwrap()
            ),
            Deny::WrongDriver
        );
    }

    #[test]
    fn refusals_are_recorded_once_per_other_driver_and_a_few_times_per_reason_and_party() {
        let at = "2026-11-23T09:30:00Z";
        let mut g = given::<Grant>(&[issued()]);
        let record = |g: &mut Grant, command: &Command| -> Option<Deny> {
            let events = g.decide(command).unwrap();
            let first = events.first()?.clone();
            g.evolve(&first);
            Some(denial(events))
        };
        let drv2 = unlock("SE-1", "drv-2", at, "n1");
        assert_eq!(record(&mut g, &drv2), Some(Deny::WrongDriver));
        // Asked again: refused all the same, nothing more recorded.
        assert_eq!(record(&mut g, &unlock("SE-1", "drv-2", at, "n2")), None);
        assert_eq!(
            g.unlock_refusal(&drv2).map(|(r, _)| r),
            Some(Deny::WrongDriver)
        );
        // Other drivers are recorded once each, to the bound.
        for n in 1..MAX_WRONG_DRIVERS_RECORDED {
            let other = unlock("SE-1", &format!("drv-x{n}"), at, "n");
            assert_eq!(record(&mut g, &other), Some(Deny::WrongDriver));
        }
        assert_eq!(record(&mut g, &unlock("SE-1", "drv-y", at, "n")), None);
        // They used up nothing of the grant's own driver's and lock's: the
        // driver's early asks are recorded to the bound per reason, and a
        // refusal of another reason still is after them.
        let early = unlock("SE-1", "drv-1", "2026-11-23T07:00:00Z", "n3");
        for _ in 0..MAX_RECORDED_PER_REASON {
            assert_eq!(record(&mut g, &early), Some(Deny::OutsideWindow));
        }
        assert_eq!(record(&mut g, &early), None);
        assert_eq!(
            g.unlock_refusal(&early).map(|(r, _)| r),
            Some(Deny::OutsideWindow)
        );
        let not_in_grant = unlock("SE-7", "drv-1", at, "n5");
        assert_eq!(record(&mut g, &not_in_grant), Some(Deny::ParcelNotInGrant));
        for _ in 0..MAX_RECORDED_PER_REASON + 2 {
            record(&mut g, &redeem("never", at));
        }
        assert_eq!(
            g.refused[&(Deny::NonceUnknown as i32, "lock-1".to_owned())],
            MAX_RECORDED_PER_REASON
        );
        assert_eq!(
            g.redeem_refusal(&redeem("never", at)).map(|(r, _)| r),
            Some(Deny::NonceUnknown)
        );
        // An unlock is always recorded, and its redeem opens.
        let opened = g.decide(&unlock("SE-1", "drv-1", at, "n4")).unwrap();
        assert!(is_authorized(&opened), "{opened:?}");
        g.evolve(&opened[0]);
        let Event::UnlockAuthorized(a) = &opened[0] else {
            unreachable!()
        };
        assert!(matches!(
            g.decide(&redeem(&a.nonce, at)).unwrap().as_slice(),
            [Event::Used(_)]
        ));
    }

    #[test]
    fn malformed_unlock_requests_are_errors_not_denials() {
        let g = given::<Grant>(&[issued()]);
        let mut no_nonce = unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "");
        assert_eq!(invalid_field(g.decide(&no_nonce)), "nonce");
        if let Command::AuthorizeUnlock {
            nonce, valid_for, ..
        } = &mut no_nonce
        {
            *nonce = "n".into();
            *valid_for = Duration::zero();
        }
        assert_eq!(invalid_field(g.decide(&no_nonce)), "valid_for");
    }

    #[test]
    fn a_grant_that_was_never_issued_cannot_be_used() {
        let none = given::<Grant>(&[]);
        let not_found = Err(DomainError::NotFound("grant/g-1".into()));
        assert_eq!(
            none.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n")),
            not_found
        );
        assert_eq!(none.decide(&revoke()), not_found);
        assert_eq!(none.decide(&expire("2026-11-23T12:00:00Z")), not_found);
        assert_eq!(none.decide(&redeem("n", "2026-11-23T09:30:00Z")), not_found);
    }

    #[test]
    fn commands_for_another_grant_are_refused() {
        let g = given::<Grant>(&[issued()]);
        let other = Command::Expire {
            grant_id: GrantId::new("g-2").unwrap(),
            now: utc("2026-11-23T12:00:00Z"),
        };
        assert_eq!(invalid_field(g.decide(&other)), "grant_id");
    }

    #[test]
    fn windows_hold_across_the_spring_forward_night() {
        // 02:30–04:00 local on 2026-03-29 in Stockholm: 02:30 never happens,
        // so the window opens when the clocks jump, 03:00 CEST = 01:00 UTC.
        let g = given::<Grant>(&[Event::Issued(issued_in(
            Country::Se,
            "2026-03-29T02:30",
            "2026-03-29T04:00",
        ))]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-03-29T00:55:00Z", "a"))
                    .unwrap()
            ),
            Deny::OutsideWindow
        );
        assert!(is_authorized(
            &g.decide(&unlock("SE-1", "drv-1", "2026-03-29T01:05:00Z", "b"))
                .unwrap()
        ));
        // 04:00 CEST is 02:00 UTC.
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-03-29T02:00:00Z", "c"))
                    .unwrap()
            ),
            Deny::Expired
        );

        // Helsinki jumps an hour later by the wall clock, at the same instant:
        // 03:30–05:00 local opens at 04:00 EEST = 01:00 UTC, ends 02:00 UTC.
        let fi = given::<Grant>(&[Event::Issued(issued_in(
            Country::Fi,
            "2026-03-29T03:30",
            "2026-03-29T05:00",
        ))]);
        assert_eq!(
            fi.window(),
            Some((utc("2026-03-29T01:00:00Z"), utc("2026-03-29T02:00:00Z")))
        );
        assert_eq!(
            denial(
                fi.decide(&unlock("SE-1", "drv-1", "2026-03-29T00:59:00Z", "d"))
                    .unwrap()
            ),
            Deny::OutsideWindow
        );
        assert!(is_authorized(
            &fi.decide(&unlock("SE-1", "drv-1", "2026-03-29T01:01:00Z", "e"))
                .unwrap()
        ));
    }

    #[test]
    fn windows_hold_across_the_autumn_night() {
        // Helsinki repeats 03:00–04:00 on 2026-10-25. A window 03:30–04:30
        // starts at the first 03:30 (00:30 UTC) and ends at 04:30 EET (02:30
        // UTC): two real hours.
        let fi = given::<Grant>(&[Event::Issued(issued_in(
            Country::Fi,
            "2026-10-25T03:30",
            "2026-10-25T04:30",
        ))]);
        for (now, nonce, open) in [
            ("2026-10-25T00:29:00Z", "a", false),
            ("2026-10-25T00:30:00Z", "b", true),
            ("2026-10-25T02:29:00Z", "c", true),
            ("2026-10-25T02:30:00Z", "d", false),
        ] {
            let events = fi.decide(&unlock("SE-1", "drv-1", now, nonce)).unwrap();
            assert_eq!(is_authorized(&events), open, "{now}");
        }
    }

    #[test]
    fn a_revoke_closes_the_grant_once() {
        let g = given::<Grant>(&[issued()]);
        assert_eq!(g.decide(&revoke()).unwrap(), vec![revoked()]);
        let g = given::<Grant>(&[issued(), revoked()]);
        assert!(g.revoked);
        assert_eq!(g.decide(&revoke()).unwrap(), vec![], "revoking twice");
        // Revoking with a parcel still to deliver is fine.
        let g = given::<Grant>(&[issued(), authorized("SE-1", "n"), used("SE-1", "n")]);
        assert_eq!(g.decide(&revoke()).unwrap(), vec![revoked()]);
        let nobody = Command::Revoke {
            grant_id: grant_id(),
            by: " ".into(),
            reason: String::new(),
        };
        assert_eq!(invalid_field(g.decide(&nobody)), "revoked_by");
    }

    #[test]
    fn an_expired_or_fully_used_grant_cannot_be_revoked() {
        let g = given::<Grant>(&[issued(), expired()]);
        assert_eq!(
            g.decide(&revoke()).unwrap_err().to_string(),
            "grant/g-1: cannot revoke when expired"
        );
        let g = given::<Grant>(&[
            issued(),
            authorized("SE-1", "n"),
            authorized("SE-2", "m"),
            used("SE-1", "n1"),
            used("SE-2", "n2"),
        ]);
        assert_eq!(
            g.decide(&revoke()).unwrap_err().to_string(),
            "grant/g-1: cannot revoke when every parcel was delivered under it"
        );
    }

    #[test]
    fn a_grant_expires_when_its_window_has_ended() {
        let g = given::<Grant>(&[issued()]);
        assert_eq!(
            g.decide(&expire("2026-11-23T10:59:59Z")).unwrap(),
            vec![],
            "not yet"
        );
        assert_eq!(
            g.decide(&expire("2026-11-23T11:00:00Z")).unwrap(),
            vec![expired()]
        );
        let g = given::<Grant>(&[issued(), expired()]);
        assert!(g.expired);
        assert_eq!(
            g.decide(&expire("2026-11-23T12:00:00Z")).unwrap(),
            vec![],
            "once"
        );
        let g = given::<Grant>(&[issued(), revoked()]);
        assert_eq!(
            g.decide(&expire("2026-11-23T12:00:00Z")).unwrap(),
            vec![],
            "revoked already closed it"
        );
    }

    fn authorized_until(parcel: &str, nonce: &str, until: &str) -> Event {
        Event::UnlockAuthorized(pb::UnlockAuthorized {
            parcel_id: parcel.into(),
            driver_id: "drv-1".into(),
            nonce: nonce.into(),
            valid_until: Some(timestamp(utc(until))),
        })
    }

    #[test]
    fn a_lock_redeems_a_nonce_once_and_the_parcel_is_used() {
        let g = given::<Grant>(&[
            issued(),
            authorized_until("SE-1", "n", "2026-11-23T09:32:00Z"),
        ]);
        assert_eq!(
            g.decide(&redeem("n", "2026-11-23T09:31:00Z")).unwrap(),
            vec![used("SE-1", "n")]
        );
        let g = given::<Grant>(&[
            issued(),
            authorized_until("SE-1", "n", "2026-11-23T09:32:00Z"),
            used("SE-1", "n"),
        ]);
        let replay = g.decide(&redeem("n", "2026-11-23T09:31:30Z")).unwrap();
        assert_eq!(denial(replay.clone()), Deny::Replayed);
        match replay.as_slice() {
            [Event::UnlockDenied(d)] => {
                assert_eq!((d.nonce.as_str(), d.lock_id.as_str()), ("n", "lock-1"));
                assert_eq!(d.parcel_id, "SE-1");
            }
            other => panic!("{other:?}"),
        }
        // A fresh authorization for a used parcel opens nothing either.
        let g = given::<Grant>(&[
            issued(),
            authorized_until("SE-1", "n", "2026-11-23T09:32:00Z"),
            used("SE-1", "n"),
            authorized_until("SE-1", "m", "2026-11-23T09:40:00Z"),
        ]);
        assert_eq!(
            denial(g.decide(&redeem("m", "2026-11-23T09:39:00Z")).unwrap()),
            Deny::Used
        );
    }

    #[test]
    fn a_lock_is_refused_what_was_never_authorized_late_revoked_or_unsigned() {
        let base = [
            issued(),
            authorized_until("SE-1", "n", "2026-11-23T09:32:00Z"),
        ];
        let g = given::<Grant>(&base);
        assert_eq!(
            denial(g.decide(&redeem("forged", "2026-11-23T09:31:00Z")).unwrap()),
            Deny::NonceUnknown
        );
        assert_eq!(
            denial(g.decide(&redeem("n", "2026-11-23T09:32:01Z")).unwrap()),
            Deny::AuthorizationExpired
        );
        let mut unsigned = redeem("n", "2026-11-23T09:31:00Z");
        if let Command::Redeem { signed, .. } = &mut unsigned {
            *signed = false;
        }
        assert_eq!(denial(g.decide(&unsigned).unwrap()), Deny::BadSignature);
        // Revoked after the authorization, while the handheld was offline.
        let mut late = base.to_vec();
        late.push(revoked());
        let g = given::<Grant>(&late);
        assert_eq!(
            denial(g.decide(&redeem("n", "2026-11-23T09:31:00Z")).unwrap()),
            Deny::Revoked
        );
    }

    #[test]
    fn a_refusal_found_on_other_streams_is_recorded_after_the_grants_own() {
        let mut cmd = unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n-1");
        if let Command::AuthorizeUnlock { elsewhere, .. } = &mut cmd {
            *elsewhere = Some((Deny::OutsideGeofence, "412 m from the door".into()));
        }
        let g = given::<Grant>(&[issued()]);
        assert_eq!(denial(g.decide(&cmd).unwrap()), Deny::OutsideGeofence);
        // The grant's own reasons come first.
        let g = given::<Grant>(&[issued(), revoked()]);
        assert_eq!(denial(g.decide(&cmd).unwrap()), Deny::Revoked);
    }

    #[test]
    fn a_refused_driver_is_told_the_reason_and_nothing_of_the_grant() {
        // Given a grant for drv-1, 08:00-11:00 UTC, of res-1 at home-1,
        let g = given::<Grant>(&[issued()]);
        // when drv-2 asks inside the window, and drv-1 before it,
        let refusals = [
            g.decide(&unlock("SE-1", "drv-2", "2026-11-23T09:00:00Z", "n-1"))
                .unwrap(),
            g.decide(&unlock("SE-1", "drv-1", "2026-11-23T07:00:00Z", "n-2"))
                .unwrap(),
        ];
        for events in refusals {
            let [Event::UnlockDenied(d)] = events.as_slice() else {
                panic!("expected one denial, got {events:?}")
            };
            // then what the caller is told names none of it,
            let told = refusal_explanation(Deny::try_from(d.reason).unwrap());
            for secret in ["drv-1", "res-1", "home-1", "08:00", "11:00", "2026"] {
                assert!(!told.contains(secret), "{told:?} names {secret}");
            }
            // while the carrier's record keeps the detail.
            assert!(!d.detail.is_empty() && d.detail != told, "{}", d.detail);
        }
        // Every reason has its own words.
        let all: BTreeSet<&str> = (0..=17)
            .filter_map(|r| Deny::try_from(r).ok())
            .map(refusal_explanation)
            .collect();
        assert_eq!(all.len(), 18);
    }
}
