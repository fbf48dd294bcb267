//! The route: one van's ordered stops for a depot and a local day, and where
//! the van is along them. A plan is versioned: replanning replaces the stops
//! and bumps the version, so a parcel's assignment can name the plan it came
//! from.
//!
//! Planning is a decision made here, from the route's own history. Starting,
//! arriving at stops and completing are what the driver's handheld reports;
//! they are checked against the current plan and nothing else. This module
//! never orders stops: that is the router's job, and it hands over the result.

use std::collections::BTreeSet;

use chrono::NaiveDate;

use crate::aggregate::Aggregate;
use crate::country::{date_from_proto, date_to_proto, instant};
use crate::error::{DomainError, Result, invalid};
use crate::ids::{DepotId, DeviceId, DriverId, ParcelId, RouteId, VehicleId};
use crate::pb::{self, route_event::Event};

/// Where a route stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// No event yet: the route does not exist.
    #[default]
    Unplanned,
    /// Planned (perhaps replanned), the van has not left.
    Planned,
    /// The driver left the depot.
    Started,
    /// The driver is back at the depot. Terminal.
    Completed,
}

impl Status {
    fn describe(self) -> &'static str {
        match self {
            Status::Unplanned => "not planned",
            Status::Planned => "planned but not started",
            Status::Started => "started",
            Status::Completed => "completed",
        }
    }
}

/// A route's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// Where it stands.
    pub status: Status,
    /// The first plan: route, depot, local day, vehicle and driver. Its stops
    /// are those of version 1; the current ones are in [`Route::stops`].
    pub plan: Option<pb::RoutePlanned>,
    /// The current plan version; 0 before the route is planned.
    pub plan_version: u32,
    /// The stops of the current plan, in order.
    pub stops: Vec<pb::PlannedStop>,
    /// Who started it, with which handheld.
    pub started: Option<pb::RouteStarted>,
    /// The stop indexes the driver has arrived at.
    pub visited: BTreeSet<u32>,
}

/// What may be asked of a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Publish a plan: version 1 for a new route, the next version when it
    /// replaces the stops of a planned or started one (no stops: the van is
    /// no longer needed). Publishing the stops already in effect changes
    /// nothing.
    Plan {
        /// The route.
        route_id: RouteId,
        /// The depot the van leaves from.
        depot_id: DepotId,
        /// The depot's local day.
        local_date: NaiveDate,
        /// The van.
        vehicle_id: VehicleId,
        /// The planned driver.
        driver_id: DriverId,
        /// The ordered stops, indexed 0..n.
        stops: Vec<pb::PlannedStop>,
        /// Why the plan changed; recorded with a replan, unused for the first.
        reason: String,
    },
    /// The driver leaves the depot.
    Start {
        /// The driver.
        driver_id: DriverId,
        /// The handheld.
        device_id: DeviceId,
    },
    /// The driver reached a stop of the current plan.
    ArriveAtStop {
        /// The stop's index in the current plan.
        stop_index: u32,
        /// Where the handheld was.
        position: Option<pb::GeoPoint>,
    },
    /// The driver is back at the depot.
    Complete,
}

/// Checks a plan's stops: at least one; indexed 0..n in order; each hands
/// over at least one valid parcel id, and no parcel is planned twice; a
/// position is a real WGS84 point; a stop never departs before it arrives.
pub fn validate_stops(stops: &[pb::PlannedStop]) -> Result<()> {
    if stops.is_empty() {
        return Err(invalid("stops", "a route has at least one stop"));
    }
    let mut parcels = BTreeSet::new();
    for (i, stop) in stops.iter().enumerate() {
        if usize::try_from(stop.index).ok() != Some(i) {
            return Err(invalid(
                "stops.index",
                format!(
                    "stop {i} has index {}; stops are numbered 0..{} in order",
                    stop.index,
                    stops.len()
                ),
            ));
        }
        if stop.parcel_ids.is_empty() {
            return Err(invalid(
                "stops.parcel_ids",
                format!("stop {i} hands over no parcel"),
            ));
        }
        for p in &stop.parcel_ids {
            ParcelId::new(p)?;
            if !parcels.insert(p.as_str()) {
                return Err(invalid(
                    "stops.parcel_ids",
                    format!("{p} is planned more than once (again at stop {i})"),
                ));
            }
        }
        if let Some(p) = &stop.position {
            check_position("stops.position", p)?;
        }
        let arrival = stop.planned_arrival.as_ref().map(instant).transpose()?;
        let departure = stop.planned_departure.as_ref().map(instant).transpose()?;
        if let (Some(a), Some(d)) = (arrival, departure)
            && d < a
        {
            return Err(invalid(
                "stops.planned_departure",
                format!("stop {i} departs at {d}, before it arrives at {a}"),
            ));
        }
    }
    Ok(())
}

fn check_position(field: &'static str, p: &pb::GeoPoint) -> Result<()> {
    if !(-90.0..=90.0).contains(&p.latitude) || !(-180.0..=180.0).contains(&p.longitude) {
        return Err(invalid(
            field,
            format!("{}, {} is not a WGS84 position", p.latitude, p.longitude),
        ));
    }
    Ok(())
}

impl Route {
    /// A stop of the current plan.
    pub fn stop(&self, index: u32) -> Option<&pb::PlannedStop> {
        usize::try_from(index).ok().and_then(|i| self.stops.get(i))
    }

    /// The index of the stop a parcel is handed over at, in the current plan.
    pub fn stop_of(&self, parcel_id: &ParcelId) -> Option<u32> {
        self.stops
            .iter()
            .find(|s| s.parcel_ids.iter().any(|p| p == parcel_id.as_str()))
            .map(|s| s.index)
    }

    /// The depot's local day the route runs on, once planned.
    pub fn local_date(&self) -> Option<NaiveDate> {
        self.plan
            .as_ref()
            .and_then(|p| p.local_date.as_ref())
            .and_then(|d| date_from_proto(d).ok())
    }

    fn subject(&self) -> String {
        self.plan
            .as_ref()
            .map_or_else(|| "route".into(), |p| format!("route/{}", p.route_id))
    }

    fn refuse(&self, action: &'static str) -> DomainError {
        DomainError::InvalidState {
            subject: self.subject(),
            action,
            state: self.status.describe().into(),
        }
    }
}

/// A replan replaces stops only: the route's identity, day, van and driver
/// stay those of the first plan.
fn same_route(
    plan: &pb::RoutePlanned,
    route_id: &RouteId,
    depot_id: &DepotId,
    local_date: NaiveDate,
    vehicle_id: &VehicleId,
    driver_id: &DriverId,
) -> Result<()> {
    let differs = |field: &'static str, planned: String, asked: String| {
        Err(invalid(
            field,
            format!(
                "route/{} is planned with {planned}, not {asked}; a replan changes only the stops",
                plan.route_id
            ),
        ))
    };
    if plan.route_id != route_id.as_str() {
        return differs("route_id", plan.route_id.clone(), route_id.to_string());
    }
    if plan.depot_id != depot_id.as_str() {
        return differs("depot_id", plan.depot_id.clone(), depot_id.to_string());
    }
    if plan.local_date != Some(date_to_proto(local_date)) {
        let planned = plan
            .local_date
            .as_ref()
            .and_then(|d| date_from_proto(d).ok())
            .map_or_else(|| "no date".into(), |d| d.to_string());
        return differs("local_date", planned, local_date.to_string());
    }
    if plan.vehicle_id != vehicle_id.as_str() {
        return differs(
            "vehicle_id",
            plan.vehicle_id.clone(),
            vehicle_id.to_string(),
        );
    }
    if plan.driver_id != driver_id.as_str() {
        return differs("driver_id", plan.driver_id.clone(), driver_id.to_string());
    }
    Ok(())
}

impl Aggregate for Route {
    type Command = Command;
    type Event = Event;

    fn from_domain(event: crate::DomainEvent) -> Option<Event> {
        match event {
            crate::DomainEvent::Route(e) => Some(e),
            _ => None,
        }
    }

    fn into_domain(event: Event) -> crate::DomainEvent {
        crate::DomainEvent::Route(event)
    }

    fn decide(&self, command: &Command) -> Result<Vec<Event>> {
        match command {
            Command::Plan {
                route_id,
                depot_id,
                local_date,
                vehicle_id,
                driver_id,
                stops,
                reason,
            } => {
                // A replan may empty a route (its van is no longer needed);
                // a first plan has stops.
                if !(stops.is_empty() && self.plan.is_some()) {
                    validate_stops(stops)?;
                }
                let Some(plan) = &self.plan else {
                    return Ok(vec![Event::Planned(pb::RoutePlanned {
                        route_id: route_id.to_string(),
                        depot_id: depot_id.to_string(),
                        local_date: Some(date_to_proto(*local_date)),
                        vehicle_id: vehicle_id.to_string(),
                        driver_id: driver_id.to_string(),
                        plan_version: 1,
                        stops: stops.clone(),
                    })]);
                };
                same_route(plan, route_id, depot_id, *local_date, vehicle_id, driver_id)?;
                // A resent plan is the plan in effect, even after completion.
                if same_stops(&self.stops, stops) {
                    return Ok(vec![]);
                }
                if self.status == Status::Completed {
                    return Err(self.refuse("replan"));
                }
                Ok(vec![Event::Replanned(pb::RouteReplanned {
                    plan_version: self.plan_version + 1,
                    stops: stops.clone(),
                    reason: reason.clone(),
                })])
            }
            Command::Start {
                driver_id,
                device_id,
            } => match (&self.status, &self.started) {
                (Status::Planned, _) => Ok(vec![Event::Started(pb::RouteStarted {
                    driver_id: driver_id.to_string(),
                    device_id: device_id.to_string(),
                })]),
                (Status::Started, Some(s)) if s.driver_id == driver_id.as_str() => Ok(vec![]),
                (Status::Started, Some(s)) => Err(DomainError::InvalidState {
                    subject: self.subject(),
                    action: "start",
                    state: format!("driver {} started it", s.driver_id),
                }),
                _ => Err(self.refuse("start")),
            },
            Command::ArriveAtStop {
                stop_index,
                position,
            } => {
                if self.status != Status::Started {
                    return Err(self.refuse("arrive at a stop"));
                }
                if self.stop(*stop_index).is_none() {
                    return Err(invalid(
                        "stop_index",
                        format!(
                            "{stop_index} is not a stop of {} plan v{}, which has stops 0..{}",
                            self.subject(),
                            self.plan_version,
                            self.stops.len()
                        ),
                    ));
                }
                if let Some(p) = position {
                    check_position("position", p)?;
                }
                Ok(vec![Event::StopArrived(pb::StopArrived {
                    stop_index: *stop_index,
                    position: *position,
                })])
            }
            Command::Complete => match self.status {
                Status::Started => Ok(vec![Event::Completed(pb::RouteCompleted {
                    stops_visited: u32::try_from(self.visited.len()).unwrap_or(u32::MAX),
                })]),
                Status::Completed => Ok(vec![]),
                Status::Unplanned | Status::Planned => Err(self.refuse("complete")),
            },
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::Planned(p) => {
                self.status = Status::Planned;
                self.plan_version = p.plan_version;
                self.stops = p.stops.clone();
                self.plan = Some(p.clone());
            }
            Event::Started(s) => {
                self.status = Status::Started;
                self.started = Some(s.clone());
            }
            Event::StopArrived(a) => {
                self.visited.insert(a.stop_index);
            }
            Event::Completed(_) => self.status = Status::Completed,
            Event::Replanned(r) => {
                self.plan_version = r.plan_version;
                self.stops = r.stops.clone();
            }
        }
    }
}

/// What a stop's sealed position is bound to: the route and the stop's
/// first parcel, so it opens only where it was written.
pub fn stop_context(route_id: &str, stop: &pb::PlannedStop) -> String {
    format!(
        "route/{route_id}/{}",
        stop.parcel_ids.first().map_or("", String::as_str)
    )
}

/// Whether two plans have the same stops. A sealed position differs with
/// every sealing (a fresh nonce) while the stop is the same: it is left out.
fn same_stops(a: &[pb::PlannedStop], b: &[pb::PlannedStop]) -> bool {
    let unsealed = |s: &pb::PlannedStop| pb::PlannedStop {
        sealed_position: None,
        ..s.clone()
    };
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| unsealed(x) == unsealed(y))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::timestamp;
    use chrono::{DateTime, Utc};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 23).unwrap()
    }

    fn stop(index: u32, parcels: &[&str]) -> pb::PlannedStop {
        pb::PlannedStop {
            index,
            parcel_ids: parcels.iter().map(|p| (*p).to_owned()).collect(),
            position: Some(pb::GeoPoint {
                latitude: 59.33,
                longitude: 18.06,
            }),
            planned_arrival: Some(timestamp(utc("2026-11-23T08:00:00Z"))),
            planned_departure: Some(timestamp(utc("2026-11-23T08:05:00Z"))),
            sealed_position: None,
        }
    }

    fn stops() -> Vec<pb::PlannedStop> {
        vec![stop(0, &["SE-1"]), stop(1, &["SE-2", "SE-3"])]
    }

    fn plan(stops: Vec<pb::PlannedStop>) -> Command {
        Command::Plan {
            route_id: RouteId::new("r-1").unwrap(),
            depot_id: DepotId::new("STO-1").unwrap(),
            local_date: day(),
            vehicle_id: VehicleId::new("van-1").unwrap(),
            driver_id: DriverId::new("drv-1").unwrap(),
            stops,
            reason: "SE-4 added".into(),
        }
    }

    fn planned() -> Event {
        Event::Planned(pb::RoutePlanned {
            route_id: "r-1".into(),
            depot_id: "STO-1".into(),
            local_date: Some(date_to_proto(day())),
            vehicle_id: "van-1".into(),
            driver_id: "drv-1".into(),
            plan_version: 1,
            stops: stops(),
        })
    }

    fn start(driver: &str) -> Command {
        Command::Start {
            driver_id: DriverId::new(driver).unwrap(),
            device_id: DeviceId::new("hh-1").unwrap(),
        }
    }

    fn started() -> Event {
        Event::Started(pb::RouteStarted {
            driver_id: "drv-1".into(),
            device_id: "hh-1".into(),
        })
    }

    fn arrive(stop_index: u32) -> Command {
        Command::ArriveAtStop {
            stop_index,
            position: None,
        }
    }

    fn arrived(stop_index: u32) -> Event {
        Event::StopArrived(pb::StopArrived {
            stop_index,
            position: None,
        })
    }

    fn completed(stops_visited: u32) -> Event {
        Event::Completed(pb::RouteCompleted { stops_visited })
    }

    fn invalid_field(result: Result<Vec<Event>>) -> &'static str {
        match result {
            Err(DomainError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn a_first_plan_is_version_one() {
        assert_eq!(
            given::<Route>(&[]).decide(&plan(stops())).unwrap(),
            vec![planned()]
        );
        let r = given::<Route>(&[planned()]);
        assert_eq!(r.status, Status::Planned);
        assert_eq!(r.plan_version, 1);
        assert_eq!(r.local_date(), Some(day()));
        assert_eq!(r.stop_of(&ParcelId::new("SE-3").unwrap()), Some(1));
        assert_eq!(r.stop_of(&ParcelId::new("SE-9").unwrap()), None);
        assert_eq!(r.stop(1).map(|s| s.parcel_ids.len()), Some(2));
        assert!(r.stop(2).is_none());
    }

    #[test]
    fn a_changed_plan_is_the_next_version_and_the_same_plan_is_nothing() {
        let r = given::<Route>(&[planned()]);
        assert_eq!(r.decide(&plan(stops())).unwrap(), vec![]);

        let mut changed = stops();
        changed.push(stop(2, &["SE-4"]));
        let replanned = Event::Replanned(pb::RouteReplanned {
            plan_version: 2,
            stops: changed.clone(),
            reason: "SE-4 added".into(),
        });
        assert_eq!(
            r.decide(&plan(changed.clone())).unwrap(),
            vec![replanned.clone()]
        );

        // Started routes can be replanned too; versions keep counting.
        let r = given::<Route>(&[planned(), started(), replanned]);
        assert_eq!(r.plan_version, 2);
        assert_eq!(r.stops, changed);
        assert_eq!(r.decide(&plan(changed)).unwrap(), vec![]);
        assert!(matches!(
            r.decide(&plan(stops())).unwrap().as_slice(),
            [Event::Replanned(p)] if p.plan_version == 3
        ));
        // A replan may empty a route whose van is no longer needed; a first
        // plan may not.
        assert!(matches!(
            r.decide(&plan(vec![])).unwrap().as_slice(),
            [Event::Replanned(p)] if p.stops.is_empty()
        ));
        assert_eq!(
            invalid_field(given::<Route>(&[]).decide(&plan(vec![]))),
            "stops"
        );
    }

    #[test]
    fn a_completed_route_is_not_replanned() {
        let r = given::<Route>(&[planned(), started(), completed(0)]);
        let mut changed = stops();
        changed.push(stop(2, &["SE-4"]));
        assert_eq!(
            r.decide(&plan(changed)).unwrap_err().to_string(),
            "route/r-1: cannot replan when completed"
        );
        // A resend of the plan in effect is still harmless.
        assert_eq!(r.decide(&plan(stops())).unwrap(), vec![]);
    }

    #[test]
    fn a_replan_changes_only_the_stops() {
        let r = given::<Route>(&[planned()]);
        let other_day = day().succ_opt().unwrap();
        let cases = [
            ("route_id", ("r-2", "STO-1", day(), "van-1", "drv-1")),
            ("depot_id", ("r-1", "GOT-1", day(), "van-1", "drv-1")),
            ("local_date", ("r-1", "STO-1", other_day, "van-1", "drv-1")),
            ("vehicle_id", ("r-1", "STO-1", day(), "van-2", "drv-1")),
            ("driver_id", ("r-1", "STO-1", day(), "van-1", "drv-2")),
        ];
        for (field, (route, depot, date, vehicle, driver)) in cases {
            let command = Command::Plan {
                route_id: RouteId::new(route).unwrap(),
                depot_id: DepotId::new(depot).unwrap(),
                local_date: date,
                vehicle_id: VehicleId::new(vehicle).unwrap(),
                driver_id: DriverId::new(driver).unwrap(),
                stops: stops(),
                reason: String::new(),
            };
            assert_eq!(invalid_field(r.decide(&command)), field);
        }
    }

    #[test]
    fn plans_are_validated() {
        let fresh = given::<Route>(&[]);
        let mut late_departure = stop(0, &["SE-1"]);
        late_departure.planned_departure = Some(timestamp(utc("2026-11-23T07:59:00Z")));
        let mut nowhere = stop(0, &["SE-1"]);
        nowhere.position = Some(pb::GeoPoint {
            latitude: 91.0,
            longitude: 0.0,
        });
        let cases = [
            ("stops", vec![]),
            ("stops.index", vec![stop(1, &["SE-1"])]),
            ("stops.index", vec![stop(0, &["SE-1"]), stop(0, &["SE-2"])]),
            ("stops.index", vec![stop(0, &["SE-1"]), stop(2, &["SE-2"])]),
            ("stops.parcel_ids", vec![stop(0, &[])]),
            (
                "stops.parcel_ids",
                vec![stop(0, &["SE-1"]), stop(1, &["SE-1"])],
            ),
            ("parcel_id", vec![stop(0, &["SE 1"])]),
            ("stops.planned_departure", vec![late_departure]),
            ("stops.position", vec![nowhere]),
        ];
        for (field, stops) in cases {
            assert_eq!(invalid_field(fresh.decide(&plan(stops))), field);
        }
        // Arrival and departure may each be left out; equal is fine.
        let mut open = stop(0, &["SE-1"]);
        open.planned_departure = None;
        let mut instant_stop = stop(1, &["SE-2"]);
        instant_stop.planned_departure = instant_stop.planned_arrival;
        assert!(fresh.decide(&plan(vec![open, instant_stop])).is_ok());
        // A broken replan is refused before anything else is looked at.
        let r = given::<Route>(&[planned()]);
        assert_eq!(
            invalid_field(r.decide(&plan(vec![stop(1, &["SE-1"])]))),
            "stops.index"
        );
    }

    #[test]
    fn a_planned_route_is_started_once() {
        let r = given::<Route>(&[planned()]);
        assert_eq!(r.decide(&start("drv-1")).unwrap(), vec![started()]);

        let r = given::<Route>(&[planned(), started()]);
        assert_eq!(r.status, Status::Started);
        assert_eq!(r.decide(&start("drv-1")).unwrap(), vec![], "a resend");
        assert_eq!(
            r.decide(&start("drv-2")).unwrap_err().to_string(),
            "route/r-1: cannot start when driver drv-1 started it"
        );
    }

    #[test]
    fn only_a_planned_route_is_started() {
        assert_eq!(
            given::<Route>(&[])
                .decide(&start("drv-1"))
                .unwrap_err()
                .to_string(),
            "route: cannot start when not planned"
        );
        let done = given::<Route>(&[planned(), started(), completed(0)]);
        assert_eq!(
            done.decide(&start("drv-1")).unwrap_err().to_string(),
            "route/r-1: cannot start when completed"
        );
    }

    #[test]
    fn stops_are_arrived_at_on_a_started_route() {
        let r = given::<Route>(&[planned(), started()]);
        let position = Some(pb::GeoPoint {
            latitude: 59.3,
            longitude: 18.0,
        });
        assert_eq!(
            r.decide(&Command::ArriveAtStop {
                stop_index: 1,
                position,
            })
            .unwrap(),
            vec![Event::StopArrived(pb::StopArrived {
                stop_index: 1,
                position,
            })]
        );
        // Coming back to a stop is a fact like any other.
        let r = given::<Route>(&[planned(), started(), arrived(1)]);
        assert_eq!(r.decide(&arrive(1)).unwrap(), vec![arrived(1)]);
    }

    #[test]
    fn an_arrival_names_a_stop_of_the_current_plan() {
        let r = given::<Route>(&[planned(), started()]);
        let err = r.decide(&arrive(2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid stop_index: 2 is not a stop of route/r-1 plan v1, which has stops 0..2"
        );
        assert_eq!(
            invalid_field(r.decide(&Command::ArriveAtStop {
                stop_index: 0,
                position: Some(pb::GeoPoint {
                    latitude: 0.0,
                    longitude: 181.0,
                }),
            })),
            "position"
        );
        // After a replan that added a stop, it exists.
        let mut changed = stops();
        changed.push(stop(2, &["SE-4"]));
        let r = given::<Route>(&[
            planned(),
            started(),
            Event::Replanned(pb::RouteReplanned {
                plan_version: 2,
                stops: changed,
                reason: String::new(),
            }),
        ]);
        assert_eq!(r.decide(&arrive(2)).unwrap(), vec![arrived(2)]);
    }

    #[test]
    fn arrivals_need_a_started_unfinished_route() {
        for (history, state) in [
            (vec![], "not planned"),
            (vec![planned()], "planned but not started"),
            (vec![planned(), started(), completed(0)], "completed"),
        ] {
            let err = given::<Route>(&history).decide(&arrive(0)).unwrap_err();
            assert!(
                matches!(&err, DomainError::InvalidState { state: s, .. } if s == state),
                "{err}"
            );
        }
    }

    #[test]
    fn completing_counts_the_stops_visited() {
        let r = given::<Route>(&[planned(), started(), arrived(0), arrived(1), arrived(0)]);
        assert_eq!(r.visited.len(), 2);
        assert_eq!(r.decide(&Command::Complete).unwrap(), vec![completed(2)]);

        let r = given::<Route>(&[planned(), started(), arrived(0), completed(1)]);
        assert_eq!(r.status, Status::Completed);
        assert_eq!(r.decide(&Command::Complete).unwrap(), vec![], "a resend");
        assert_eq!(
            r.decide(&arrive(1)).unwrap_err().to_string(),
            "route/r-1: cannot arrive at a stop when completed"
        );
    }

    #[test]
    fn only_a_started_route_is_completed() {
        for (history, message) in [
            (vec![], "route: cannot complete when not planned"),
            (
                vec![planned()],
                "route/r-1: cannot complete when planned but not started",
            ),
        ] {
            assert_eq!(
                given::<Route>(&history)
                    .decide(&Command::Complete)
                    .unwrap_err()
                    .to_string(),
                message
            );
        }
    }
}
