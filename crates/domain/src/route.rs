//! The route: one van's ordered stops for a depot and local day, its plan
//! versions, and its progress through the day.

use chrono::NaiveDate;

use crate::aggregate::Aggregate;
use crate::country::{date_to_proto, instant};
use crate::error::{DomainError, Result, invalid};
use crate::ids::{DepotId, DeviceId, DriverId, RouteId, VehicleId};
use crate::pb::{self, route_event::Event};

/// Where a route stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Status {
    /// No plan yet.
    #[default]
    Unplanned,
    /// Planned, not yet driven.
    Planned,
    /// The driver has left the depot.
    Started,
    /// Back at the depot. Terminal.
    Completed,
}

/// A route's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Route {
    /// Where it stands.
    pub status: Status,
    /// The first plan.
    pub plan: Option<pb::RoutePlanned>,
    /// The current plan version (1 for the first plan).
    pub plan_version: u32,
    /// The current stops.
    pub stops: Vec<pb::PlannedStop>,
    /// Who is driving it, once started.
    pub driver_id: Option<String>,
    /// Stops reached so far (indexes into `stops`).
    pub visited: Vec<u32>,
}

/// What may be asked of a route.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Plan it; on a planned route, a new plan version.
    Plan {
        /// The route.
        route_id: RouteId,
        /// The depot.
        depot_id: DepotId,
        /// The depot's local day.
        local_date: NaiveDate,
        /// The van.
        vehicle_id: VehicleId,
        /// The driver.
        driver_id: DriverId,
        /// The stops, in visiting order, indexed from 0.
        stops: Vec<pb::PlannedStop>,
        /// Why it is replanned (ignored for the first plan).
        reason: String,
    },
    /// The driver leaves the depot.
    Start {
        /// The driver.
        driver_id: DriverId,
        /// The handheld.
        device_id: DeviceId,
    },
    /// The driver reached a stop.
    ArriveAtStop {
        /// The stop's index in the current plan.
        stop_index: u32,
        /// Where the handheld was.
        position: Option<pb::GeoPoint>,
    },
    /// Back at the depot.
    Complete,
}

fn validate_stops(stops: &[pb::PlannedStop]) -> Result<()> {
    for (i, stop) in stops.iter().enumerate() {
        if stop.index as usize != i {
            return Err(invalid(
                "stops",
                format!(
                    "stop {i} has index {}; indexes run 0, 1, 2, ... in order",
                    stop.index
                ),
            ));
        }
        if stop.parcel_ids.is_empty() {
            return Err(invalid("stops", format!("stop {i} has no parcel")));
        }
        if let (Some(a), Some(d)) = (&stop.planned_arrival, &stop.planned_departure)
            && instant(d)? < instant(a)?
        {
            return Err(invalid(
                "stops",
                format!("stop {i} departs before it arrives"),
            ));
        }
    }
    Ok(())
}

impl Route {
    fn refuse(&self, action: &'static str) -> DomainError {
        DomainError::InvalidState {
            subject: self
                .plan
                .as_ref()
                .map_or_else(|| "route".into(), |p| format!("route/{}", p.route_id)),
            action,
            state: match self.status {
                Status::Unplanned => "not planned",
                Status::Planned => "planned, not started",
                Status::Started => "started",
                Status::Completed => "completed",
            }
            .into(),
        }
    }
}

impl Aggregate for Route {
    type Command = Command;
    type Event = Event;

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
                validate_stops(stops)?;
                match self.status {
                    Status::Unplanned => Ok(vec![Event::Planned(pb::RoutePlanned {
                        route_id: route_id.to_string(),
                        depot_id: depot_id.to_string(),
                        local_date: Some(date_to_proto(*local_date)),
                        vehicle_id: vehicle_id.to_string(),
                        driver_id: driver_id.to_string(),
                        plan_version: 1,
                        stops: stops.clone(),
                    })]),
                    Status::Completed => Err(self.refuse("replan")),
                    _ if self.stops == *stops => Ok(vec![]),
                    _ => Ok(vec![Event::Replanned(pb::RouteReplanned {
                        plan_version: self.plan_version + 1,
                        stops: stops.clone(),
                        reason: reason.clone(),
                    })]),
                }
            }
            Command::Start {
                driver_id,
                device_id,
            } => match self.status {
                Status::Planned => Ok(vec![Event::Started(pb::RouteStarted {
                    driver_id: driver_id.to_string(),
                    device_id: device_id.to_string(),
                })]),
                Status::Started if self.driver_id.as_deref() == Some(driver_id.as_str()) => {
                    Ok(vec![])
                }
                _ => Err(self.refuse("start")),
            },
            Command::ArriveAtStop {
                stop_index,
                position,
            } => {
                if self.status != Status::Started {
                    return Err(self.refuse("arrive at a stop"));
                }
                if *stop_index as usize >= self.stops.len() {
                    return Err(invalid(
                        "stop_index",
                        format!(
                            "{stop_index} is not a stop of plan v{} ({} stops)",
                            self.plan_version,
                            self.stops.len()
                        ),
                    ));
                }
                Ok(vec![Event::StopArrived(pb::StopArrived {
                    stop_index: *stop_index,
                    position: *position,
                })])
            }
            Command::Complete => match self.status {
                Status::Started => Ok(vec![Event::Completed(pb::RouteCompleted {
                    stops_visited: self.visited.len() as u32,
                })]),
                Status::Completed => Ok(vec![]),
                _ => Err(self.refuse("complete")),
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
            Event::Replanned(r) => {
                self.plan_version = r.plan_version;
                self.stops = r.stops.clone();
            }
            Event::Started(s) => {
                self.status = Status::Started;
                self.driver_id = Some(s.driver_id.clone());
            }
            Event::StopArrived(a) => {
                if !self.visited.contains(&a.stop_index) {
                    self.visited.push(a.stop_index);
                }
            }
            Event::Completed(_) => self.status = Status::Completed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::timestamp;
    use chrono::{TimeZone, Utc};

    fn stop(index: u32, parcels: &[&str]) -> pb::PlannedStop {
        pb::PlannedStop {
            index,
            parcel_ids: parcels.iter().map(|p| (*p).to_owned()).collect(),
            position: None,
            planned_arrival: None,
            planned_departure: None,
        }
    }

    fn plan(stops: Vec<pb::PlannedStop>) -> Command {
        Command::Plan {
            route_id: RouteId::new("STO-1-2026-11-23-1").unwrap(),
            depot_id: DepotId::new("STO-1").unwrap(),
            local_date: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            vehicle_id: VehicleId::new("van-1").unwrap(),
            driver_id: DriverId::new("drv-1").unwrap(),
            stops,
            reason: "parcels added".into(),
        }
    }

    fn planned() -> Vec<Event> {
        given::<Route>(&[])
            .decide(&plan(vec![stop(0, &["SE-1"]), stop(1, &["SE-2", "SE-3"])]))
            .unwrap()
    }

    fn start() -> Command {
        Command::Start {
            driver_id: DriverId::new("drv-1").unwrap(),
            device_id: DeviceId::new("hh-1").unwrap(),
        }
    }

    #[test]
    fn the_first_plan_is_version_1_and_a_change_is_a_new_version() {
        let history = planned();
        assert!(
            matches!(&history[0], Event::Planned(p) if p.plan_version == 1 && p.stops.len() == 2)
        );
        let r = given::<Route>(&history);
        // The same stops again: already in effect.
        assert_eq!(
            r.decide(&plan(vec![stop(0, &["SE-1"]), stop(1, &["SE-2", "SE-3"])]))
                .unwrap(),
            vec![]
        );
        let events = r
            .decide(&plan(vec![
                stop(0, &["SE-1", "SE-4"]),
                stop(1, &["SE-2", "SE-3"]),
            ]))
            .unwrap();
        assert!(
            matches!(&events[0], Event::Replanned(p) if p.plan_version == 2 && p.reason == "parcels added")
        );
        let mut all = history;
        all.extend(events);
        assert_eq!(given::<Route>(&all).plan_version, 2);
    }

    #[test]
    fn stops_are_validated() {
        let err = given::<Route>(&[])
            .decide(&plan(vec![stop(1, &["SE-1"])]))
            .unwrap_err();
        assert!(err.to_string().contains("stop 0 has index 1"), "{err}");
        assert!(
            given::<Route>(&[])
                .decide(&plan(vec![stop(0, &[])]))
                .is_err()
        );
        let mut s = stop(0, &["SE-1"]);
        let t = Utc.with_ymd_and_hms(2026, 11, 23, 9, 0, 0).unwrap();
        s.planned_arrival = Some(timestamp(t));
        s.planned_departure = Some(timestamp(t - chrono::Duration::minutes(1)));
        assert!(given::<Route>(&[]).decide(&plan(vec![s])).is_err());
    }

    #[test]
    fn a_route_is_started_driven_and_completed_in_order() {
        let mut history = planned();
        let r = given::<Route>(&history);
        assert!(r.decide(&Command::Complete).is_err(), "not started");
        assert!(
            r.decide(&Command::ArriveAtStop {
                stop_index: 0,
                position: None
            })
            .is_err()
        );
        history.extend(r.decide(&start()).unwrap());
        let r = given::<Route>(&history);
        assert_eq!(
            r.decide(&start()).unwrap(),
            vec![],
            "starting twice is harmless"
        );
        let err = r
            .decide(&Command::ArriveAtStop {
                stop_index: 5,
                position: None,
            })
            .unwrap_err();
        assert!(matches!(
            err,
            DomainError::Invalid {
                field: "stop_index",
                ..
            }
        ));
        history.extend(
            r.decide(&Command::ArriveAtStop {
                stop_index: 1,
                position: None,
            })
            .unwrap(),
        );
        let r = given::<Route>(&history);
        assert_eq!(
            r.decide(&Command::Complete).unwrap(),
            vec![Event::Completed(pb::RouteCompleted { stops_visited: 1 })]
        );
        history.extend(r.decide(&Command::Complete).unwrap());
        let done = given::<Route>(&history);
        assert_eq!(done.status, Status::Completed);
        assert!(
            done.decide(&plan(vec![stop(0, &["SE-9"])])).is_err(),
            "a completed route is not replanned"
        );
        assert!(done.decide(&start()).is_err());
    }
}
