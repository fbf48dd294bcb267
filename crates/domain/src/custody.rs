//! Custody: which driver may report what happens to a parcel at its door
//! (an attempt started, a delivery, a failed attempt).
//!
//! The binding is the route plan: a parcel is in the custody of the driver
//! of the route whose current plan names it. The domain records no
//! reassignment of a parcel from one driver to another other than a new plan
//! version, so the latest plan version naming the parcel is the binding: a
//! replan that moves a parcel to another route hands it to that route's
//! driver. A route's driver is the one its first plan names.
//!
//! A parcel that no plan names yet is [`Custody::Unplanned`]. Refusing
//! reports on such parcels is the intended rule (no route, no driver), but
//! the service still accepts them while handhelds and tests that report on
//! unplanned parcels are moved onto planned routes; the verdict is kept
//! apart so the service can count them.

use crate::ids::{DriverId, ParcelId};
use crate::route::Route;

/// The plan a parcel is on: the route, its driver and the plan version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The route whose current plan names the parcel.
    pub route_id: String,
    /// The route's driver.
    pub driver_id: String,
    /// The plan version that named the parcel.
    pub plan_version: u32,
}

impl Assignment {
    /// The assignment `route` gives `parcel`, if its current plan names it.
    pub fn of(route: &Route, parcel: &ParcelId) -> Option<Assignment> {
        let plan = route.plan.as_ref()?;
        route.stop_of(parcel)?;
        Some(Assignment {
            route_id: plan.route_id.clone(),
            driver_id: plan.driver_id.clone(),
            plan_version: route.plan_version,
        })
    }
}

/// Whether a driver may report on a parcel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Custody {
    /// The parcel is on a route of this driver.
    Theirs,
    /// No plan names the parcel.
    Unplanned,
    /// The parcel is on another driver's route: the report is refused.
    NotTheirs {
        /// The route the parcel is on (not its driver: a refusal does not
        /// tell one driver who another is).
        route_id: String,
    },
}

impl Custody {
    /// Refused: the parcel is on another driver's route.
    pub fn is_refused(&self) -> bool {
        matches!(self, Custody::NotTheirs { .. })
    }
}

/// Whether `reporter` may report on a parcel whose latest plan is
/// `assignment` (`None`: no plan names it).
pub fn custody(assignment: Option<&Assignment>, reporter: &DriverId) -> Custody {
    match assignment {
        None => Custody::Unplanned,
        Some(a) if a.driver_id == reporter.as_str() => Custody::Theirs,
        Some(a) => Custody::NotTheirs {
            route_id: a.route_id.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::pb::{self, route_event::Event};

    fn drv(id: &str) -> DriverId {
        DriverId::new(id).unwrap()
    }

    fn parcel(id: &str) -> ParcelId {
        ParcelId::new(id).unwrap()
    }

    fn stops(parcels: &[&str]) -> Vec<pb::PlannedStop> {
        parcels
            .iter()
            .enumerate()
            .map(|(i, p)| pb::PlannedStop {
                index: u32::try_from(i).unwrap(),
                parcel_ids: vec![(*p).into()],
                ..Default::default()
            })
            .collect()
    }

    fn planned(route: &str, driver: &str, parcels: &[&str]) -> Event {
        Event::Planned(pb::RoutePlanned {
            route_id: route.into(),
            depot_id: "STO-1".into(),
            driver_id: driver.into(),
            plan_version: 1,
            stops: stops(parcels),
            ..Default::default()
        })
    }

    fn replanned(version: u32, parcels: &[&str]) -> Event {
        Event::Replanned(pb::RouteReplanned {
            plan_version: version,
            stops: stops(parcels),
            reason: "traffic".into(),
        })
    }

    /// Given a route's history, when `reporter` reports on `p`: the verdict.
    fn when(history: &[Event], p: &str, reporter: &str) -> Custody {
        let route = given::<Route>(history);
        custody(Assignment::of(&route, &parcel(p)).as_ref(), &drv(reporter))
    }

    #[test]
    fn the_driver_of_the_route_may_report_on_its_parcels() {
        let history = [planned("r-1", "drv-1", &["SE-1", "SE-2"])];
        assert_eq!(when(&history, "SE-2", "drv-1"), Custody::Theirs);
        let route = given::<Route>(&history);
        assert_eq!(
            Assignment::of(&route, &parcel("SE-1")),
            Some(Assignment {
                route_id: "r-1".into(),
                driver_id: "drv-1".into(),
                plan_version: 1,
            })
        );
    }

    #[test]
    fn another_driver_is_refused() {
        let history = [planned("r-1", "drv-1", &["SE-1"])];
        let verdict = when(&history, "SE-1", "drv-2");
        assert_eq!(
            verdict,
            Custody::NotTheirs {
                route_id: "r-1".into()
            }
        );
        assert!(verdict.is_refused());
    }

    #[test]
    fn the_latest_plan_version_is_the_binding() {
        // Replanned without SE-1: the route no longer carries it, so its
        // driver no longer has it (the route it moved to does).
        let history = [
            planned("r-1", "drv-1", &["SE-1", "SE-2"]),
            replanned(2, &["SE-2"]),
        ];
        assert_eq!(when(&history, "SE-1", "drv-1"), Custody::Unplanned);
        assert_eq!(when(&history, "SE-2", "drv-1"), Custody::Theirs);
        let route = given::<Route>(&history);
        assert_eq!(
            Assignment::of(&route, &parcel("SE-2")).map(|a| a.plan_version),
            Some(2)
        );

        // Moved onto drv-2's route by its replan: drv-2's now, not drv-1's.
        let other = [
            planned("r-2", "drv-2", &["SE-9"]),
            replanned(2, &["SE-9", "SE-1"]),
        ];
        assert_eq!(when(&other, "SE-1", "drv-2"), Custody::Theirs);
        assert!(when(&other, "SE-1", "drv-1").is_refused());
    }

    #[test]
    fn a_parcel_no_plan_names_is_unplanned() {
        assert_eq!(when(&[], "SE-1", "drv-1"), Custody::Unplanned);
        let history = [planned("r-1", "drv-1", &["SE-1"])];
        assert_eq!(when(&history, "SE-7", "drv-2"), Custody::Unplanned);
        assert!(!Custody::Unplanned.is_refused());
    }
}
