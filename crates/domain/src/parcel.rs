//! The parcel: manifested for a local day, put on routes, attempted until it
//! is delivered or returned. The attempt counter lives here, so "attempts per
//! parcel" is a fact of the parcel's own stream, not of a report.
//!
//! A driver's free-text note on a failed attempt is personal data: the
//! handheld service stores it only sealed under the parcel's household key
//! (`AttemptFailed.sealed_note`, opened with [`note_context`]), never in the
//! clear.
//!
//! A parcel a day's plan could not place gets the planner's reason on its
//! own stream (`LeftOut`), once per day and reason, so the reason outlives
//! the plan's reply: the console and analysts read it from the log.

use chrono::{DateTime, NaiveDate, Utc};

use crate::aggregate::Aggregate;
use crate::country::{Country, date_from_proto, date_to_proto, timestamp, window_bounds};
use crate::error::{DomainError, Result, invalid};
use crate::ids::{DeviceId, DriverId, GrantId, ParcelId, PartnerId, RouteId};
use crate::pb::{self, parcel_event::Event};

/// Where a parcel stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// No event yet: the parcel does not exist.
    #[default]
    Unknown,
    /// Accepted from a manifest, waiting for a route.
    Manifested,
    /// On a planned route.
    Assigned,
    /// In a van.
    OutForDelivery,
    /// A driver is at the door.
    Attempting,
    /// The last attempt failed; it can be tried again.
    AttemptFailed,
    /// Handed over. Terminal.
    Delivered,
    /// Sent back. Terminal.
    Returned,
}

impl Status {
    /// Delivered or returned: nothing more happens to the parcel.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Delivered | Status::Returned)
    }

    fn describe(self) -> &'static str {
        match self {
            Status::Unknown => "not manifested",
            Status::Manifested => "manifested",
            Status::Assigned => "assigned to a route",
            Status::OutForDelivery => "out for delivery",
            Status::Attempting => "an attempt is under way",
            Status::AttemptFailed => "the last attempt failed",
            Status::Delivered => "delivered",
            Status::Returned => "returned",
        }
    }
}

/// A parcel's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parcel {
    /// Where it stands.
    pub status: Status,
    /// The manifest row it was accepted from.
    pub manifest: Option<pb::ParcelManifested>,
    /// Attempts started so far; the current or last attempt's number.
    pub attempts: u32,
    /// The route it is on, if any.
    pub route_id: Option<String>,
    /// How it was delivered, once it is.
    pub delivered_by: Option<pb::DeliveryMethod>,
    /// Why the last attempt failed, if it did.
    pub last_failure: Option<pb::FailureReason>,
    /// The local day it is due.
    pub due: Option<NaiveDate>,
    /// The driver who scanned it to start the current or last attempt.
    pub attempt_by: Option<String>,
    /// The day and reason the last plan to leave it out gave; cleared when
    /// it is put on a route or moved to another day.
    pub left_out: Option<(NaiveDate, String)>,
}

/// The most characters a plan's reason for leaving a parcel out may have:
/// bounds what one plan writes per parcel.
pub const MAX_LEFT_OUT_REASON: usize = 500;

/// The most attempts a parcel is given. Far past any carrier's rule (two or
/// three, then a pickup point or the sender), it bounds what one handheld
/// can write on a parcel's stream and send to its partner: a start, or a
/// failure that would open another attempt, is refused after it. A delivery
/// is never refused for it, and an attempt already open may still fail.
pub const MAX_ATTEMPTS: u32 = 100;

/// `reason` cut to [`MAX_LEFT_OUT_REASON`] characters (ending in `…` when
/// cut), so that a long list of causes still fits the event.
pub fn clip_left_out_reason(reason: &str) -> String {
    let reason = reason.trim();
    if reason.chars().count() <= MAX_LEFT_OUT_REASON {
        return reason.to_owned();
    }
    let mut clipped: String = reason.chars().take(MAX_LEFT_OUT_REASON - 1).collect();
    clipped.push('…');
    clipped
}

/// What may be asked of a parcel.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Accept a manifest row. Loading the same row again changes nothing.
    Manifest(Box<pb::ParcelManifested>),
    /// A plan put it on a route. Planned again onto the route it is on
    /// (and not left out in between), nothing is written; refused while a driver is at its door and after
    /// a failed attempt (the depot carries it over or returns it).
    AssignToRoute {
        /// The route.
        route_id: RouteId,
        /// The plan version that did it.
        plan_version: u32,
        /// Its stop on the route.
        stop_index: u32,
    },
    /// Scanned into the van: out for delivery. Only into the van of the
    /// route its latest assignment names; scanned again into the same van,
    /// nothing is written; refused before a plan puts it on a route, while
    /// a driver is at its door and after a failed attempt.
    LoadOnVan {
        /// The route.
        route_id: RouteId,
        /// The driver.
        driver_id: DriverId,
    },
    /// The driver is at the door.
    StartAttempt {
        /// The route the handheld names, if any.
        route_id: Option<RouteId>,
        /// The route the latest plan puts the parcel on, as the caller's
        /// custody check found it (the driver's own). A named route must be
        /// this one; an attempt that names none is recorded on it, else on
        /// the route the parcel's stream assigns it to.
        planned_route: Option<RouteId>,
        /// The driver.
        driver_id: DriverId,
        /// The handheld.
        device_id: DeviceId,
    },
    /// Handed over. Starts an attempt first if the handheld did not report one.
    Deliver {
        /// How.
        method: pb::DeliveryMethod,
        /// The driver.
        driver_id: DriverId,
        /// The handheld.
        device_id: DeviceId,
        /// The in-home grant used, for in-home deliveries.
        grant_id: Option<GrantId>,
        /// Where the handheld was.
        position: Option<pb::GeoPoint>,
    },
    /// The attempt did not succeed. Starts an attempt first if none is open.
    FailAttempt {
        /// Why.
        reason: pb::FailureReason,
        /// The driver.
        driver_id: DriverId,
        /// The handheld.
        device_id: DeviceId,
        /// Free text from the driver.
        note: String,
    },
    /// Due on another local day.
    Reschedule {
        /// The new day.
        date: NaiveDate,
        /// Why.
        reason: String,
    },
    /// A day's plan could not place it. Recorded once per day and reason.
    LeaveOut {
        /// The day planned: the day it is due.
        date: NaiveDate,
        /// The planner's reason: not empty, at most
        /// [`MAX_LEFT_OUT_REASON`] characters, never personal data.
        reason: String,
        /// When the plan was made.
        planned_at: DateTime<Utc>,
        /// Whether the plan this one replaces had put it on a route: a
        /// reason recorded before that is stale, and the same reason is
        /// recorded again.
        placed_since: bool,
    },
    /// Send it back to the sender.
    Return {
        /// Why.
        reason: String,
    },
}

/// The context a failed attempt's note is sealed under: the parcel and the
/// attempt, so a sealed note cannot be moved onto another attempt or parcel.
pub fn note_context(parcel_id: &str, attempt: u32) -> String {
    format!("parcel/{parcel_id}/attempt/{attempt}/note")
}

/// Checks a manifest row's shape: ids, country, service, weight, and a
/// window that lies on the delivery day for in-home parcels.
pub fn validate_manifested(m: &pb::ParcelManifested) -> Result<()> {
    ParcelId::new(&m.parcel_id)?;
    PartnerId::new(&m.partner_id)?;
    crate::ids::DepotId::new(&m.depot_id)?;
    let country = Country::from_proto(m.country)?;
    let date = date_from_proto(
        m.delivery_date
            .as_ref()
            .ok_or_else(|| invalid("delivery_date", "is missing"))?,
    )?;
    let service = pb::Service::try_from(m.service)
        .ok()
        .filter(|s| *s != pb::Service::Unspecified)
        .ok_or_else(|| invalid("service", format!("{} is not a service", m.service)))?;
    if m.weight_grams == 0 {
        return Err(invalid("weight", "must be more than 0 grams"));
    }
    if let Some(p) = m.address.as_ref().and_then(|a| a.position.as_ref()) {
        if !(-90.0..=90.0).contains(&p.latitude) {
            return Err(invalid(
                "latitude",
                format!("{} is not in -90..90", p.latitude),
            ));
        }
        if !(-180.0..=180.0).contains(&p.longitude) {
            return Err(invalid(
                "longitude",
                format!("{} is not in -180..180", p.longitude),
            ));
        }
    }
    match (&m.in_home_window, service) {
        (None, pb::Service::InHome) => {
            return Err(invalid(
                "window",
                "in-home parcels need the resident's window",
            ));
        }
        (Some(w), _) => {
            let (start, end) = window_bounds(w)?;
            if end <= start {
                return Err(invalid("window", "ends before it starts"));
            }
            if country.local_date(start) != date {
                return Err(invalid(
                    "window",
                    format!(
                        "starts on {}, not on the delivery date {date}",
                        country.local_date(start)
                    ),
                ));
            }
        }
        (None, _) => {}
    }
    Ok(())
}

impl Parcel {
    fn refuse(&self, action: &'static str) -> DomainError {
        self.refuse_in(action, self.status.describe().into())
    }

    /// `action` refused in `state`, as words.
    fn refuse_in(&self, action: &'static str, state: String) -> DomainError {
        DomainError::InvalidState {
            subject: self
                .manifest
                .as_ref()
                .map(|m| format!("parcel/{}", m.parcel_id))
                .unwrap_or_else(|| "parcel".into()),
            action,
            state,
        }
    }

    fn require_open(&self, action: &'static str) -> Result<()> {
        if self.status == Status::Unknown || self.status.is_terminal() {
            return Err(self.refuse(action));
        }
        Ok(())
    }

    /// Refused when `action` would open an attempt past [`MAX_ATTEMPTS`].
    fn require_attempts_left(&self, action: &'static str) -> Result<()> {
        if self.status != Status::Attempting && self.attempts >= MAX_ATTEMPTS {
            return Err(self.refuse_in(
                action,
                format!(
                    "it has had {MAX_ATTEMPTS} attempts, the most (return it, or leave it at a pickup point)"
                ),
            ));
        }
        Ok(())
    }

    fn open_attempt(&self, driver_id: &DriverId, device_id: &DeviceId) -> Option<Event> {
        (self.status != Status::Attempting).then(|| {
            Event::AttemptStarted(pb::AttemptStarted {
                attempt: self.attempts + 1,
                route_id: self.route_id.clone().unwrap_or_default(),
                driver_id: driver_id.to_string(),
                device_id: device_id.to_string(),
            })
        })
    }

    fn attempt_number(&self) -> u32 {
        if self.status == Status::Attempting {
            self.attempts
        } else {
            self.attempts + 1
        }
    }
}

impl Aggregate for Parcel {
    type Command = Command;
    type Event = Event;

    fn from_domain(event: crate::DomainEvent) -> Option<Event> {
        match event {
            crate::DomainEvent::Parcel(e) => Some(e),
            _ => None,
        }
    }

    fn into_domain(event: Event) -> crate::DomainEvent {
        crate::DomainEvent::Parcel(event)
    }

    fn decide(&self, command: &Command) -> Result<Vec<Event>> {
        match command {
            Command::Manifest(m) => {
                validate_manifested(m)?;
                match &self.manifest {
                    None => Ok(vec![Event::Manifested(m.as_ref().clone())]),
                    // A reloaded manifest row is the same parcel, not a new one;
                    // where it came from (file, line) may differ.
                    Some(existing) if same_row(existing, m) => Ok(vec![]),
                    Some(existing) => Err(DomainError::AlreadyExists(format!(
                        "parcel/{}",
                        existing.parcel_id
                    ))),
                }
            }
            Command::AssignToRoute {
                route_id,
                plan_version,
                stop_index,
            } => {
                self.require_open("assign to a route")?;
                // A driver at the door, or an attempt that failed and waits
                // for the depot to carry it over (or return it): not the
                // plan's to move.
                if matches!(self.status, Status::Attempting | Status::AttemptFailed) {
                    return Err(self.refuse("assign to a route"));
                }
                // Planned again onto the route it is on: nothing changed
                // (unless a plan in between left it out).
                if matches!(self.status, Status::Assigned | Status::OutForDelivery)
                    && self.route_id.as_deref() == Some(route_id.as_str())
                    && self.left_out.is_none()
                {
                    return Ok(vec![]);
                }
                Ok(vec![Event::AssignedToRoute(pb::ParcelAssignedToRoute {
                    route_id: route_id.to_string(),
                    plan_version: *plan_version,
                    stop_index: *stop_index,
                })])
            }
            Command::LoadOnVan {
                route_id,
                driver_id,
            } => {
                self.require_open("load on a van")?;
                // Only onto the route its latest assignment names: not one
                // it has left, nor before a plan put it on one (a parcel
                // moved to another day has none until that day's plan).
                match (self.status, self.route_id.as_deref()) {
                    (Status::OutForDelivery, Some(on)) if on == route_id.as_str() => {
                        return Ok(vec![]);
                    }
                    (Status::Assigned | Status::OutForDelivery, Some(on))
                        if on == route_id.as_str() => {}
                    (Status::Assigned | Status::OutForDelivery, Some(on)) => {
                        return Err(self
                            .refuse_in("load on a van", format!("on route {on}, not {route_id}")));
                    }
                    _ => return Err(self.refuse("load on a van")),
                }
                Ok(vec![Event::OutForDelivery(pb::ParcelOutForDelivery {
                    route_id: route_id.to_string(),
                    driver_id: driver_id.to_string(),
                })])
            }
            Command::StartAttempt {
                route_id,
                planned_route,
                driver_id,
                device_id,
            } => {
                self.require_open("start an attempt")?;
                if self.status == Status::Attempting {
                    return Err(self.refuse("start an attempt"));
                }
                self.require_attempts_left("start an attempt")?;
                // An attempt names no route but the one the plan puts the
                // parcel on (the plan, not the parcel's stream: a parcel
                // whose attempt failed keeps its stream's route when a
                // replan the same day moves it).
                if let (Some(named), Some(on)) = (route_id, planned_route)
                    && named != on
                {
                    return Err(
                        self.refuse_in("start an attempt", format!("on route {on}, not {named}"))
                    );
                }
                Ok(vec![Event::AttemptStarted(pb::AttemptStarted {
                    attempt: self.attempts + 1,
                    route_id: route_id
                        .as_ref()
                        .or(planned_route.as_ref())
                        .map(ToString::to_string)
                        .or_else(|| self.route_id.clone())
                        .unwrap_or_default(),
                    driver_id: driver_id.to_string(),
                    device_id: device_id.to_string(),
                })])
            }
            Command::Deliver {
                method,
                driver_id,
                device_id,
                grant_id,
                position,
            } => {
                self.require_open("deliver")?;
                if *method == pb::DeliveryMethod::Unspecified {
                    return Err(invalid("method", "is not given"));
                }
                if *method == pb::DeliveryMethod::InHome && grant_id.is_none() {
                    return Err(invalid("grant_id", "an in-home delivery needs its grant"));
                }
                let mut events: Vec<Event> = self
                    .open_attempt(driver_id, device_id)
                    .into_iter()
                    .collect();
                events.push(Event::Delivered(pb::ParcelDelivered {
                    attempt: self.attempt_number(),
                    method: *method as i32,
                    driver_id: driver_id.to_string(),
                    device_id: device_id.to_string(),
                    grant_id: grant_id
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    position: *position,
                    sealed_position: None,
                }));
                Ok(events)
            }
            Command::FailAttempt {
                reason,
                driver_id,
                device_id,
                note,
            } => {
                self.require_open("fail an attempt")?;
                if *reason == pb::FailureReason::Unspecified {
                    return Err(invalid("reason", "is not given"));
                }
                self.require_attempts_left("fail an attempt")?;
                let mut events: Vec<Event> = self
                    .open_attempt(driver_id, device_id)
                    .into_iter()
                    .collect();
                events.push(Event::AttemptFailed(pb::AttemptFailed {
                    attempt: self.attempt_number(),
                    reason: *reason as i32,
                    driver_id: driver_id.to_string(),
                    device_id: device_id.to_string(),
                    note: note.clone(),
                    sealed_note: None,
                }));
                Ok(events)
            }
            Command::Reschedule { date, reason } => {
                self.require_open("reschedule")?;
                if self.status == Status::Attempting {
                    return Err(self.refuse("reschedule"));
                }
                if self.due == Some(*date) {
                    return Ok(vec![]);
                }
                Ok(vec![Event::Rescheduled(pb::ParcelRescheduled {
                    delivery_date: Some(date_to_proto(*date)),
                    reason: reason.clone(),
                })])
            }
            Command::LeaveOut {
                date,
                reason,
                planned_at,
                placed_since,
            } => {
                if reason.trim().is_empty() {
                    return Err(invalid("reason", "is empty: say why the plan left it out"));
                }
                let chars = reason.chars().count();
                if chars > MAX_LEFT_OUT_REASON {
                    return Err(invalid(
                        "reason",
                        format!("is {chars} characters, more than {MAX_LEFT_OUT_REASON}"),
                    ));
                }
                self.require_open("leave out of a plan")?;
                if self.status == Status::Attempting {
                    return Err(self.refuse("leave out of a plan"));
                }
                if self.due != Some(*date) {
                    return Err(invalid(
                        "date",
                        format!(
                            "{date} is not the day the parcel is due ({})",
                            self.due
                                .map_or_else(|| "none".to_owned(), |d| d.to_string())
                        ),
                    ));
                }
                if !placed_since
                    && self
                        .left_out
                        .as_ref()
                        .is_some_and(|(d, r)| d == date && r == reason)
                {
                    return Ok(vec![]);
                }
                Ok(vec![Event::LeftOut(pb::ParcelLeftOut {
                    delivery_date: Some(date_to_proto(*date)),
                    reason: reason.clone(),
                    planned_at: Some(timestamp(*planned_at)),
                })])
            }
            Command::Return { reason } => {
                if self.status == Status::Returned {
                    return Ok(vec![]);
                }
                self.require_open("return")?;
                Ok(vec![Event::Returned(pb::ParcelReturned {
                    reason: reason.clone(),
                    attempts: self.attempts,
                })])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::Manifested(m) => {
                self.status = Status::Manifested;
                self.due = m
                    .delivery_date
                    .as_ref()
                    .and_then(|d| date_from_proto(d).ok());
                self.manifest = Some(m.clone());
            }
            Event::AssignedToRoute(a) => {
                self.status = Status::Assigned;
                self.route_id = Some(a.route_id.clone());
                self.left_out = None;
            }
            Event::OutForDelivery(o) => {
                self.status = Status::OutForDelivery;
                self.route_id = Some(o.route_id.clone());
            }
            Event::AttemptStarted(a) => {
                self.status = Status::Attempting;
                self.attempts = a.attempt;
                self.attempt_by = Some(a.driver_id.clone());
            }
            Event::Delivered(d) => {
                self.status = Status::Delivered;
                self.delivered_by = pb::DeliveryMethod::try_from(d.method).ok();
            }
            Event::AttemptFailed(f) => {
                self.status = Status::AttemptFailed;
                self.last_failure = pb::FailureReason::try_from(f.reason).ok();
            }
            Event::Rescheduled(r) => {
                self.due = r
                    .delivery_date
                    .as_ref()
                    .and_then(|d| date_from_proto(d).ok());
                self.status = Status::Manifested;
                self.route_id = None;
                self.left_out = None;
            }
            Event::LeftOut(l) => {
                self.left_out = l
                    .delivery_date
                    .as_ref()
                    .and_then(|d| date_from_proto(d).ok())
                    .map(|d| (d, l.reason.clone()));
            }
            Event::Returned(_) => self.status = Status::Returned,
        }
    }
}

fn same_row(a: &pb::ParcelManifested, b: &pb::ParcelManifested) -> bool {
    // The sealed address differs with every sealing (a fresh nonce); its
    // keyed digest says whether the address is the same.
    let strip = |m: &pb::ParcelManifested| pb::ParcelManifested {
        manifest_id: String::new(),
        manifest_line: 0,
        sealed_address: None,
        ..m.clone()
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::{local_window, parse_local};

    fn driver() -> DriverId {
        DriverId::new("drv-7").unwrap()
    }
    fn device() -> DeviceId {
        DeviceId::new("hh-7").unwrap()
    }

    fn manifested(service: pb::Service) -> pb::ParcelManifested {
        let date = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        pb::ParcelManifested {
            parcel_id: "SE-00001234".into(),
            partner_id: "acme".into(),
            country: pb::Country::Se as i32,
            depot_id: "STO-1".into(),
            delivery_date: Some(date_to_proto(date)),
            address: Some(pb::Address {
                street: "Drottninggatan 1".into(),
                postal_code: "111 51".into(),
                city: "Stockholm".into(),
                position: Some(pb::GeoPoint {
                    latitude: 59.33,
                    longitude: 18.06,
                }),
            }),
            service: service as i32,
            weight_grams: 1200,
            in_home_window: (service == pb::Service::InHome).then(|| {
                local_window(
                    Country::Se,
                    parse_local("s", "2026-11-23T09:00").unwrap(),
                    parse_local("e", "2026-11-23T12:00").unwrap(),
                )
                .unwrap()
            }),
            manifest_id: "m-1".into(),
            manifest_line: 2,
            sealed_address: None,
            address_digest: Vec::new(),
        }
    }

    fn fail(reason: pb::FailureReason) -> Command {
        Command::FailAttempt {
            reason,
            driver_id: driver(),
            device_id: device(),
            note: String::new(),
        }
    }

    fn deliver(method: pb::DeliveryMethod) -> Command {
        Command::Deliver {
            method,
            driver_id: driver(),
            device_id: device(),
            grant_id: None,
            position: None,
        }
    }

    fn started(attempt: u32) -> Event {
        Event::AttemptStarted(pb::AttemptStarted {
            attempt,
            route_id: String::new(),
            driver_id: "drv-7".into(),
            device_id: "hh-7".into(),
        })
    }

    fn failed(attempt: u32) -> Event {
        Event::AttemptFailed(pb::AttemptFailed {
            attempt,
            reason: pb::FailureReason::NotHome as i32,
            driver_id: "drv-7".into(),
            device_id: "hh-7".into(),
            note: String::new(),
            sealed_note: None,
        })
    }

    #[test]
    fn a_manifest_row_creates_the_parcel_once() {
        let m = manifested(pb::Service::Doorstep);
        let p = given::<Parcel>(&[]);
        assert_eq!(
            p.decide(&Command::Manifest(Box::new(m.clone()))).unwrap(),
            vec![Event::Manifested(m.clone())]
        );

        // Reloading the same row from another file changes nothing.
        let p = given::<Parcel>(&[Event::Manifested(m.clone())]);
        let mut reloaded = m.clone();
        reloaded.manifest_id = "m-2".into();
        reloaded.manifest_line = 99;
        assert_eq!(
            p.decide(&Command::Manifest(Box::new(reloaded))).unwrap(),
            vec![]
        );

        // A different row under the same id is refused.
        let mut other = m;
        other.weight_grams = 5;
        assert_eq!(
            p.decide(&Command::Manifest(Box::new(other))).unwrap_err(),
            DomainError::AlreadyExists("parcel/SE-00001234".into())
        );
    }

    #[test]
    fn manifest_rows_are_validated() {
        let mut m = manifested(pb::Service::InHome);
        m.in_home_window = None;
        let err = given::<Parcel>(&[])
            .decide(&Command::Manifest(Box::new(m)))
            .unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::Invalid {
                    field: "window",
                    ..
                }
            ),
            "{err}"
        );

        let mut m = manifested(pb::Service::Doorstep);
        m.weight_grams = 0;
        assert!(
            given::<Parcel>(&[])
                .decide(&Command::Manifest(Box::new(m)))
                .is_err()
        );

        let mut m = manifested(pb::Service::InHome);
        m.delivery_date = Some(date_to_proto(
            NaiveDate::from_ymd_opt(2026, 11, 24).unwrap(),
        ));
        let err = given::<Parcel>(&[])
            .decide(&Command::Manifest(Box::new(m)))
            .unwrap_err();
        assert!(
            err.to_string().contains("not on the delivery date"),
            "{err}"
        );
    }

    #[test]
    fn a_plan_puts_it_on_a_route_and_a_scan_into_the_van_sends_it_out() {
        let m = manifested(pb::Service::Doorstep);
        let route = |r: &str| RouteId::new(r).unwrap();
        let assign = |r: &str| Command::AssignToRoute {
            route_id: route(r),
            plan_version: 1,
            stop_index: 3,
        };
        let load = |r: &str| Command::LoadOnVan {
            route_id: route(r),
            driver_id: driver(),
        };
        let mut history = vec![Event::Manifested(m)];
        // No plan has put it on a route yet: no van to load it into.
        let err = given::<Parcel>(&history).decide(&load("r-1")).unwrap_err();
        assert!(err.to_string().ends_with("when manifested"), "{err}");
        let events = given::<Parcel>(&history).decide(&assign("r-1")).unwrap();
        assert_eq!(
            events,
            vec![Event::AssignedToRoute(pb::ParcelAssignedToRoute {
                route_id: "r-1".into(),
                plan_version: 1,
                stop_index: 3,
            })]
        );
        history.extend(events);
        let p = given::<Parcel>(&history);
        assert_eq!(p.status, Status::Assigned);
        // Planned again onto the same route: nothing new; onto another: moved.
        assert_eq!(p.decide(&assign("r-1")).unwrap(), vec![]);
        assert_eq!(p.decide(&assign("r-2")).unwrap().len(), 1);

        // Only into the van of the route it is on.
        let err = p.decide(&load("r-2")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parcel/SE-00001234: cannot load on a van when on route r-1, not r-2"
        );
        let events = p.decide(&load("r-1")).unwrap();
        assert_eq!(
            events,
            vec![Event::OutForDelivery(pb::ParcelOutForDelivery {
                route_id: "r-1".into(),
                driver_id: "drv-7".into(),
            })]
        );
        history.extend(events);
        let p = given::<Parcel>(&history);
        assert_eq!(p.status, Status::OutForDelivery);
        assert_eq!(p.decide(&load("r-1")).unwrap(), vec![]);
        assert_eq!(p.decide(&assign("r-1")).unwrap(), vec![]);
        // Left out by a plan, then placed back on the same route: recorded
        // again, so the track does not stay at left_out.
        let mut dropped = history.clone();
        dropped.push(Event::LeftOut(pb::ParcelLeftOut {
            delivery_date: Some(date_to_proto(
                NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            )),
            reason: "no van".into(),
            planned_at: None,
        }));
        assert_eq!(
            given::<Parcel>(&dropped)
                .decide(&assign("r-1"))
                .unwrap()
                .len(),
            1
        );
        // Moved to another route: loaded only into that one's van, and
        // attempted only on that route.
        let mut moved = history.clone();
        moved.extend(p.decide(&assign("r-2")).unwrap());
        let moved = given::<Parcel>(&moved);
        assert!(moved.decide(&load("r-1")).is_err());
        assert_eq!(moved.decide(&load("r-2")).unwrap().len(), 1);
        // At the door only on the route the plan puts it on, whatever its
        // stream says: a replan the same day moves a parcel whose attempt
        // failed without a new assignment on its stream.
        let start = |named: Option<&str>, planned: Option<&str>| Command::StartAttempt {
            route_id: named.map(route),
            planned_route: planned.map(route),
            driver_id: driver(),
            device_id: device(),
        };
        let err = moved.decide(&start(Some("r-1"), Some("r-2"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "parcel/SE-00001234: cannot start an attempt when on route r-2, not r-1"
        );
        let started_on = |p: &Parcel, c: &Command| match &p.decide(c).unwrap()[..] {
            [Event::AttemptStarted(a)] => a.route_id.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(started_on(&moved, &start(Some("r-2"), Some("r-2"))), "r-2");
        assert_eq!(started_on(&moved, &start(None, Some("r-2"))), "r-2");
        // With no plan to hold it to, what is named, else the stream's.
        assert_eq!(started_on(&moved, &start(Some("r-9"), None)), "r-9");
        assert_eq!(started_on(&moved, &start(None, None)), "r-2");

        // At the door, and after a failed attempt, neither moves it.
        history.push(started(1));
        let at_door = given::<Parcel>(&history);
        for c in [assign("r-2"), load("r-1")] {
            let err = at_door.decide(&c).unwrap_err();
            assert!(err.to_string().contains("an attempt is under way"), "{err}");
        }
        history.push(failed(1));
        let failed = given::<Parcel>(&history);
        for c in [assign("r-2"), load("r-1")] {
            let err = failed.decide(&c).unwrap_err();
            assert!(err.to_string().contains("the last attempt failed"), "{err}");
        }
        assert_eq!(failed.status, Status::AttemptFailed);
        // Moved the same day by a replan that could not assign it (its
        // stream still says r-1): tried again on the route it was moved to.
        assert_eq!(started_on(&failed, &start(Some("r-2"), Some("r-2"))), "r-2");
    }

    #[test]
    fn attempts_are_counted_per_parcel() {
        let m = manifested(pb::Service::Doorstep);
        let history = vec![Event::Manifested(m), started(1), failed(1)];
        let p = given::<Parcel>(&history);
        assert_eq!(p.attempts, 1);
        assert_eq!(p.status, Status::AttemptFailed);

        // A failure reported without a start opens attempt 2 first.
        let events = p.decide(&fail(pb::FailureReason::NotHome)).unwrap();
        assert_eq!(events, vec![started(2), failed(2)]);

        let mut history = history;
        history.extend(events);
        let p = given::<Parcel>(&history);
        assert_eq!(p.attempts, 2);

        // An explicit start, then delivery within that attempt.
        let events = p
            .decide(&Command::StartAttempt {
                route_id: None,
                planned_route: None,
                driver_id: driver(),
                device_id: device(),
            })
            .unwrap();
        assert_eq!(events, vec![started(3)]);
        history.extend(events);
        let p = given::<Parcel>(&history);
        let events = p.decide(&deliver(pb::DeliveryMethod::Neighbour)).unwrap();
        assert_eq!(events.len(), 1);
        assert!(matches!(&events[0], Event::Delivered(d) if d.attempt == 3));
        history.extend(events);
        let p = given::<Parcel>(&history);
        assert_eq!(p.status, Status::Delivered);
        assert_eq!(p.attempts, 3);
        assert_eq!(p.delivered_by, Some(pb::DeliveryMethod::Neighbour));
    }

    #[test]
    fn a_parcel_is_attempted_at_most_max_attempts_times_and_still_delivered() {
        let mut history = vec![Event::Manifested(manifested(pb::Service::Doorstep))];
        for n in 1..=MAX_ATTEMPTS {
            history.extend([started(n), failed(n)]);
        }
        let p = given::<Parcel>(&history);
        assert_eq!(p.attempts, MAX_ATTEMPTS);
        let start = Command::StartAttempt {
            route_id: None,
            planned_route: None,
            driver_id: driver(),
            device_id: device(),
        };
        for (what, command) in [
            ("start", &start),
            ("fail", &fail(pb::FailureReason::NotHome)),
        ] {
            let err = p.decide(command).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("has had {MAX_ATTEMPTS} attempts, the most")),
                "{what}: {err}"
            );
        }
        // A delivery is never refused for it.
        let events = p.decide(&deliver(pb::DeliveryMethod::Doorstep)).unwrap();
        assert!(matches!(&events[1], Event::Delivered(d) if d.attempt == MAX_ATTEMPTS + 1));
        // The last attempt, open, may still fail; the next may not start.
        history.truncate(history.len() - 1);
        let p = given::<Parcel>(&history);
        assert_eq!(
            p.decide(&fail(pb::FailureReason::NotHome)).unwrap(),
            vec![failed(MAX_ATTEMPTS)]
        );
        history.pop();
        let p = given::<Parcel>(&history);
        assert!(p.decide(&start).is_ok(), "attempt {MAX_ATTEMPTS} itself");
    }

    #[test]
    fn delivered_and_returned_are_terminal() {
        let m = manifested(pb::Service::Doorstep);
        let delivered = given::<Parcel>(&[
            Event::Manifested(m.clone()),
            started(1),
            Event::Delivered(pb::ParcelDelivered {
                attempt: 1,
                method: pb::DeliveryMethod::Doorstep as i32,
                ..Default::default()
            }),
        ]);
        let err = delivered
            .decide(&fail(pb::FailureReason::NotHome))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "parcel/SE-00001234: cannot fail an attempt when delivered"
        );
        assert!(
            delivered
                .decide(&deliver(pb::DeliveryMethod::Doorstep))
                .is_err()
        );
        assert!(
            delivered
                .decide(&Command::Return { reason: "x".into() })
                .is_err()
        );

        let returned = given::<Parcel>(&[
            Event::Manifested(m),
            started(1),
            failed(1),
            Event::Returned(pb::ParcelReturned {
                reason: "3 failed attempts".into(),
                attempts: 1,
            }),
        ]);
        assert_eq!(returned.status, Status::Returned);
        assert!(
            returned
                .decide(&deliver(pb::DeliveryMethod::Doorstep))
                .is_err()
        );
        // Returning again is already in effect.
        assert_eq!(
            returned
                .decide(&Command::Return { reason: "x".into() })
                .unwrap(),
            vec![]
        );
    }

    #[test]
    fn nothing_happens_to_a_parcel_that_was_never_manifested() {
        let p = given::<Parcel>(&[]);
        let err = p
            .decide(&deliver(pb::DeliveryMethod::Doorstep))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "parcel: cannot deliver when not manifested"
        );
    }

    #[test]
    fn in_home_delivery_needs_a_grant_and_returns_count_attempts() {
        let m = manifested(pb::Service::InHome);
        let p = given::<Parcel>(&[Event::Manifested(m.clone())]);
        assert!(p.decide(&deliver(pb::DeliveryMethod::InHome)).is_err());
        let ok = p
            .decide(&Command::Deliver {
                method: pb::DeliveryMethod::InHome,
                driver_id: driver(),
                device_id: device(),
                grant_id: Some(GrantId::new("g-1").unwrap()),
                position: None,
            })
            .unwrap();
        assert_eq!(ok.len(), 2);

        let p = given::<Parcel>(&[
            Event::Manifested(m),
            started(1),
            failed(1),
            started(2),
            failed(2),
        ]);
        assert_eq!(
            p.decide(&Command::Return {
                reason: "undeliverable".into()
            })
            .unwrap(),
            vec![Event::Returned(pb::ParcelReturned {
                reason: "undeliverable".into(),
                attempts: 2
            })]
        );
    }

    #[test]
    fn rescheduling_moves_the_due_day_and_takes_it_off_its_route() {
        let m = manifested(pb::Service::Doorstep);
        let p = given::<Parcel>(&[
            Event::Manifested(m),
            Event::AssignedToRoute(pb::ParcelAssignedToRoute {
                route_id: "r-1".into(),
                plan_version: 1,
                stop_index: 4,
            }),
            started(1),
            failed(1),
        ]);
        let next = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let events = p
            .decide(&Command::Reschedule {
                date: next,
                reason: "not home".into(),
            })
            .unwrap();
        let mut p = p;
        for e in &events {
            p.evolve(e);
        }
        assert_eq!(p.due, Some(next));
        assert_eq!(p.route_id, None);
        assert_eq!(p.attempts, 1);
    }

    fn leave_out(date: NaiveDate, reason: &str) -> Command {
        Command::LeaveOut {
            date,
            reason: reason.into(),
            planned_at: chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 22, 18, 0, 0).unwrap(),
            placed_since: false,
        }
    }

    fn invalid_field(result: Result<Vec<Event>>) -> &'static str {
        match result {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_plan_records_why_it_left_a_parcel_out_once_per_day_and_reason() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let mut history = vec![Event::Manifested(manifested(pb::Service::Doorstep))];
        let heavy = "1200 g, 0 cm³ is more than any van carries";
        let events = given::<Parcel>(&history)
            .decide(&leave_out(day, heavy))
            .unwrap();
        assert_eq!(events.len(), 1);
        let Event::LeftOut(l) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(l.reason, heavy);
        assert_eq!(l.delivery_date, Some(date_to_proto(day)));
        assert!(l.planned_at.is_some());
        history.extend(events);
        let p = given::<Parcel>(&history);
        assert_eq!(p.left_out, Some((day, heavy.to_owned())));
        assert_eq!(p.status, Status::Manifested);

        // The same day planned again with the same result adds nothing.
        assert_eq!(p.decide(&leave_out(day, heavy)).unwrap(), vec![]);
        // Another reason is recorded.
        let window = "its window cannot be met within any shift";
        let events = p.decide(&leave_out(day, window)).unwrap();
        assert!(matches!(&events[..], [Event::LeftOut(l)] if l.reason == window));

        // A plan placed it since: the same reason is recorded again.
        let mut again = leave_out(day, heavy);
        if let Command::LeaveOut { placed_since, .. } = &mut again {
            *placed_since = true;
        }
        assert_eq!(p.decide(&again).unwrap().len(), 1);

        // Assigned to a route, the old reason is stale: leaving it out again
        // records it again.
        history.push(Event::AssignedToRoute(pb::ParcelAssignedToRoute {
            route_id: "r-1".into(),
            plan_version: 2,
            stop_index: 0,
        }));
        let p = given::<Parcel>(&history);
        assert_eq!(p.left_out, None);
        assert_eq!(p.decide(&leave_out(day, heavy)).unwrap().len(), 1);
    }

    #[test]
    fn leaving_out_refuses_bad_reasons_other_days_and_closed_parcels() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        let m = manifested(pb::Service::Doorstep);
        let p = given::<Parcel>(&[Event::Manifested(m.clone())]);
        assert_eq!(invalid_field(p.decide(&leave_out(day, "  "))), "reason");
        let long = "x".repeat(MAX_LEFT_OUT_REASON + 1);
        let err = p.decide(&leave_out(day, &long)).unwrap_err();
        assert_eq!(invalid_field(Err(err.clone())), "reason");
        assert!(err.to_string().contains("501 characters"), "{err}");
        // At the bound, it is taken; clipped, any reason fits.
        assert_eq!(
            p.decide(&leave_out(day, &"x".repeat(MAX_LEFT_OUT_REASON)))
                .unwrap()
                .len(),
            1
        );
        let clipped = clip_left_out_reason(&"é".repeat(2 * MAX_LEFT_OUT_REASON));
        assert_eq!(clipped.chars().count(), MAX_LEFT_OUT_REASON);
        assert!(clipped.ends_with('…'));
        assert_eq!(clip_left_out_reason(" short "), "short");

        let other = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let err = p.decide(&leave_out(other, "too heavy")).unwrap_err();
        assert_eq!(invalid_field(Err(err.clone())), "date");
        assert!(err.to_string().contains("2026-11-23"), "{err}");

        let never = given::<Parcel>(&[]);
        assert!(matches!(
            never.decide(&leave_out(day, "too heavy")),
            Err(DomainError::InvalidState { .. })
        ));
        let delivered = given::<Parcel>(&[
            Event::Manifested(m),
            started(1),
            Event::Delivered(pb::ParcelDelivered {
                attempt: 1,
                method: pb::DeliveryMethod::Doorstep as i32,
                ..Default::default()
            }),
        ]);
        assert_eq!(
            delivered
                .decide(&leave_out(day, "too heavy"))
                .unwrap_err()
                .to_string(),
            "parcel/SE-00001234: cannot leave out of a plan when delivered"
        );
    }
}
