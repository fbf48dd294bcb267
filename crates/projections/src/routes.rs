//! Routes by driver and local day: what a handheld asks for in the morning;
//! and, by parcel, the route whose latest plan carries it: whose handheld
//! may report on it ([`threshold_domain::custody`]).

use std::collections::HashMap;

use chrono::NaiveDate;
use threshold_domain::custody::Assignment;
use threshold_domain::{Category, DomainEvent, pb};
use threshold_log::{Position, RecordedEvent};

use pb::route_event::Event as R;

/// One route's current plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRoute {
    /// The route.
    pub route_id: String,
    /// Its depot.
    pub depot_id: String,
    /// Its van.
    pub vehicle_id: String,
    /// The latest plan version.
    pub plan_version: u32,
    /// The stops of that version, in order.
    pub stops: Vec<pb::PlannedStop>,
}

/// Every route's current plan, by (driver, local day).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Routes {
    by_route: HashMap<String, (String, NaiveDate, PlannedRoute)>,
    /// Parcel id to the route (stream id) whose latest plan names it.
    by_parcel: HashMap<String, String>,
    position: Position,
}

impl Routes {
    /// The position of the last event applied.
    pub fn position(&self) -> Position {
        self.position
    }

    /// Applies one event, in log order; replays are ignored.
    pub fn apply(&mut self, event: &RecordedEvent) {
        if event.position <= self.position {
            return;
        }
        self.position = event.position;
        if event.stream.category() != Category::Route {
            return;
        }
        let Ok(DomainEvent::Route(e)) = event.decode() else {
            return;
        };
        let id = event.stream.id().to_owned();
        match e {
            R::Planned(p) => {
                let Some(day) = crate::day(p.local_date.as_ref()) else {
                    return;
                };
                self.carry(&id, &[], &p.stops);
                self.by_route.insert(
                    id,
                    (
                        p.driver_id.clone(),
                        day,
                        PlannedRoute {
                            route_id: p.route_id,
                            depot_id: p.depot_id,
                            vehicle_id: p.vehicle_id,
                            plan_version: p.plan_version,
                            stops: p.stops,
                        },
                    ),
                );
            }
            R::Replanned(r) => {
                let Some((_, _, route)) = self.by_route.get_mut(&id) else {
                    return;
                };
                let before = std::mem::replace(&mut route.stops, r.stops);
                route.plan_version = r.plan_version;
                let after = route.stops.clone();
                self.carry(&id, &before, &after);
            }
            R::Started(_) | R::StopArrived(_) | R::Completed(_) => {}
        }
    }

    /// Route `route` now carries the parcels of `after` instead of those of
    /// `before`: a parcel it dropped is on no route, unless a later plan of
    /// another route named it already.
    fn carry(&mut self, route: &str, before: &[pb::PlannedStop], after: &[pb::PlannedStop]) {
        for p in before.iter().flat_map(|s| &s.parcel_ids) {
            if self.by_parcel.get(p).is_some_and(|r| r == route) {
                self.by_parcel.remove(p);
            }
        }
        for p in after.iter().flat_map(|s| &s.parcel_ids) {
            self.by_parcel.insert(p.clone(), route.to_owned());
        }
    }

    /// The route whose latest plan names `parcel`: its id, driver and plan
    /// version; `None` when no plan names it.
    pub fn carrying(&self, parcel: &str) -> Option<Assignment> {
        let route = self.by_parcel.get(parcel)?;
        let (driver, _, planned) = self.by_route.get(route)?;
        Some(Assignment {
            route_id: planned.route_id.clone(),
            driver_id: driver.clone(),
            plan_version: planned.plan_version,
        })
    }

    /// The driver's routes on a local day (usually one), by route id.
    pub fn for_driver(&self, driver: &str, day: NaiveDate) -> Vec<&PlannedRoute> {
        let mut routes: Vec<&PlannedRoute> = self
            .by_route
            .values()
            .filter(|(d, date, _)| d == driver && *date == day)
            .map(|(_, _, r)| r)
            .collect();
        routes.sort_by(|a, b| a.route_id.cmp(&b.route_id));
        routes
    }

    /// Every route of `depot` on `day`, by route id.
    pub fn for_depot(&self, depot: &str, day: NaiveDate) -> Vec<&PlannedRoute> {
        let mut routes: Vec<&PlannedRoute> = self
            .by_route
            .values()
            .filter(|(_, date, r)| r.depot_id == depot && *date == day)
            .map(|(_, _, r)| r)
            .collect();
        routes.sort_by(|a, b| a.route_id.cmp(&b.route_id));
        routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use threshold_domain::country::date_to_proto;
    use threshold_domain::{EventId, StreamId};
    use threshold_log::NewEvent;

    fn stops(parcels: &[&str]) -> Vec<pb::PlannedStop> {
        parcels
            .iter()
            .zip(0..)
            .map(|(p, index)| pb::PlannedStop {
                index,
                parcel_ids: vec![(*p).into()],
                ..Default::default()
            })
            .collect()
    }

    fn apply(routes: &mut Routes, stream: &str, e: R) {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 6, 0, 0).unwrap();
        let position = Position(routes.position().0 + 1);
        routes.apply(&RecordedEvent {
            position,
            stream: stream.parse::<StreamId>().unwrap(),
            stream_version: 1,
            recorded_at: at,
            event: NewEvent::new(EventId::new(), &DomainEvent::Route(e), at),
        });
    }

    fn planned(route: &str, driver: &str, parcels: &[&str]) -> R {
        R::Planned(pb::RoutePlanned {
            route_id: route.into(),
            depot_id: "STO-1".into(),
            local_date: Some(date_to_proto(
                NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
            )),
            driver_id: driver.into(),
            plan_version: 1,
            stops: stops(parcels),
            ..Default::default()
        })
    }

    fn replanned(version: u32, parcels: &[&str]) -> R {
        R::Replanned(pb::RouteReplanned {
            plan_version: version,
            stops: stops(parcels),
            reason: String::new(),
        })
    }

    fn driver_of(routes: &Routes, parcel: &str) -> Option<(String, String, u32)> {
        routes
            .carrying(parcel)
            .map(|a| (a.route_id, a.driver_id, a.plan_version))
    }

    #[test]
    fn a_parcel_is_carried_by_the_latest_plan_that_names_it() {
        let mut routes = Routes::default();
        apply(
            &mut routes,
            "route/r-1",
            planned("r-1", "drv-1", &["SE-1", "SE-2"]),
        );
        apply(&mut routes, "route/r-2", planned("r-2", "drv-2", &["SE-3"]));
        assert_eq!(
            driver_of(&routes, "SE-1"),
            Some(("r-1".into(), "drv-1".into(), 1))
        );
        assert_eq!(driver_of(&routes, "SE-9"), None);

        // SE-1 moves to r-2 (its replan first, then r-1's without it).
        apply(&mut routes, "route/r-2", replanned(2, &["SE-3", "SE-1"]));
        apply(&mut routes, "route/r-1", replanned(2, &["SE-2"]));
        assert_eq!(
            driver_of(&routes, "SE-1"),
            Some(("r-2".into(), "drv-2".into(), 2))
        );
        assert_eq!(
            driver_of(&routes, "SE-2"),
            Some(("r-1".into(), "drv-1".into(), 2))
        );

        // Dropped from every plan: on no route.
        apply(&mut routes, "route/r-2", replanned(3, &["SE-3"]));
        assert_eq!(driver_of(&routes, "SE-1"), None);
    }
}
