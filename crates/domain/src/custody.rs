//! Custody: which driver may report what happens to a parcel (loaded into
//! the van, an attempt started at its door, a delivery, a failed attempt),
//! and how far the handheld's own clock is believed about when it happened.
//! Which van a parcel is loaded into is the parcel's own stream's word: the
//! route its latest assignment names ([`crate::parcel::Command::LoadOnVan`]).
//!
//! The binding is the route plan: a parcel is in the custody of the driver
//! of the route whose current plan names it. The domain records no
//! reassignment of a parcel from one driver to another other than a new plan
//! version, so the latest plan version naming the parcel is the binding: a
//! replan that moves a parcel to another route is the recorded handover to
//! that route's driver, and the driver it left loses it. A route's driver is
//! the one its first plan names.
//!
//! A parcel that no plan names is [`Custody::Unplanned`] and refused like
//! another driver's: no route, no driver may report on it.
//!
//! A handheld is often offline and resends what it has on reconnect, so its
//! time may lie well in the past; it may not lie in the future.
//! [`handheld_time`] accepts a time up to
//! [`DEVICE_CLOCK_SKEW`](crate::home::DEVICE_CLOCK_SKEW) ahead of the
//! server's clock (taken at the server's time) and back to
//! [`OFFLINE_RESEND_BOUND`]; anything else is refused.

use chrono::{DateTime, Duration, Utc};

use crate::error::{Result, invalid};
use crate::home::DEVICE_CLOCK_SKEW;
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
    /// No plan names the parcel: the report is refused.
    Unplanned,
    /// The parcel is on another driver's route: the report is refused.
    NotTheirs {
        /// The route the parcel is on (not its driver: a refusal does not
        /// tell one driver who another is).
        route_id: String,
    },
}

impl Custody {
    /// Refused: the parcel is on another driver's route, or on none.
    pub fn is_refused(&self) -> bool {
        !matches!(self, Custody::Theirs)
    }

    /// Why a report is refused, as a short stable label for metrics and
    /// logs (`None` when it is not).
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Custody::Theirs => None,
            Custody::Unplanned => Some("not_planned"),
            Custody::NotTheirs { .. } => Some("not_the_route_driver"),
        }
    }
}

/// How far back a handheld's time is believed: a handheld offline longer
/// than this has its old events refused rather than written into a history
/// long since reported to partners.
pub const OFFLINE_RESEND_BOUND: Duration = Duration::days(7);

/// The instant a handheld event reported as happening at `occurred_at` is
/// recorded at, given the server's clock `now`: its own time when that is
/// not ahead of the server's, the server's when it is ahead by at most
/// [`DEVICE_CLOCK_SKEW`]. Further ahead, or older than
/// [`OFFLINE_RESEND_BOUND`], is refused as an invalid `occurred_at`.
pub fn handheld_time(occurred_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let ahead = occurred_at.signed_duration_since(now);
    if ahead > DEVICE_CLOCK_SKEW {
        return Err(invalid(
            "occurred_at",
            format!(
                "is {} s ahead of the server's clock; a handheld's time may be at most {} s ahead",
                ahead.num_seconds(),
                DEVICE_CLOCK_SKEW.num_seconds()
            ),
        ));
    }
    if -ahead > OFFLINE_RESEND_BOUND {
        return Err(invalid(
            "occurred_at",
            format!(
                "is {} h behind the server's clock; events older than {} days are not accepted",
                (-ahead).num_hours(),
                OFFLINE_RESEND_BOUND.num_days()
            ),
        ));
    }
    Ok(occurred_at.min(now))
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
        assert!(when(&history, "SE-1", "drv-1").is_refused());
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
        assert!(Custody::Unplanned.is_refused());
        assert_eq!(Custody::Unplanned.refusal(), Some("not_planned"));
        assert_eq!(Custody::Theirs.refusal(), None);
    }

    #[test]
    fn a_handhelds_time_is_bounded_by_the_servers_clock() {
        let now = Utc::now();
        // Within the skew ahead: taken at the server's time.
        let ahead = now + DEVICE_CLOCK_SKEW;
        assert_eq!(handheld_time(ahead, now).unwrap(), now);
        let too_far = now + DEVICE_CLOCK_SKEW + Duration::seconds(1);
        let err = handheld_time(too_far, now).unwrap_err();
        assert!(err.to_string().contains("occurred_at"), "{err}");
        assert!(err.to_string().contains("ahead"), "{err}");
        // An offline resend hours old keeps its own time.
        let resent = now - Duration::hours(5);
        assert_eq!(handheld_time(resent, now).unwrap(), resent);
        let oldest = now - OFFLINE_RESEND_BOUND;
        assert_eq!(handheld_time(oldest, now).unwrap(), oldest);
        let stale = oldest - Duration::seconds(1);
        let err = handheld_time(stale, now).unwrap_err();
        assert!(err.to_string().contains("behind"), "{err}");
    }
}
