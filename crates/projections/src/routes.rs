//! Routes by driver and local day: what a handheld asks for in the morning.

use std::collections::HashMap;

use chrono::NaiveDate;
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
                if let Some((_, _, route)) = self.by_route.get_mut(&id) {
                    route.plan_version = r.plan_version;
                    route.stops = r.stops;
                }
            }
            R::Started(_) | R::StopArrived(_) | R::Completed(_) => {}
        }
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
