//! The rules of an in-home entry that span aggregates: whether an unlock is
//! refused for a reason outside the grant (the route, the parcel's scan, the
//! geofence, the home's camera and household), and whether an in-home
//! delivery may close (the lock opened under the grant and locked again).
//!
//! Pure and synchronous like the rest of the domain: the caller loads the
//! states of the grant, route, parcel and home and hands them in. Nothing
//! here reads a stream or a clock, or opens a seal.

use chrono::{DateTime, Duration, Utc};

use crate::grant::Grant;
use crate::home::{self, Home};
use crate::ids::{DriverId, GrantId, ParcelId};
use crate::parcel::{Parcel, Status as ParcelStatus};
use crate::pb::{self, UnlockDenyReason as Deny};
use crate::route::Route;

/// Why an unlock is refused: the reason recorded on the grant, and words
/// for the driver.
pub type Refusal = (Deny, String);

/// What a handheld asks at the door.
#[derive(Debug, Clone, Copy)]
pub struct UnlockAsked<'a> {
    /// The route the driver says it drives; empty when none was named.
    pub route_id: &'a str,
    /// The parcel to deliver.
    pub parcel_id: &'a ParcelId,
    /// The driver asking.
    pub driver_id: &'a DriverId,
    /// Where the handheld is.
    pub position: Option<&'a pb::GeoPoint>,
    /// Whether the driver acknowledged the resident's note about a pet.
    pub pet_acknowledged: bool,
    /// The server's time of the request.
    pub now: DateTime<Utc>,
}

/// The streams around a grant, as they stand when the unlock is asked.
#[derive(Debug, Clone, Copy)]
pub struct AroundGrant<'a> {
    /// The route named in the request (a default route when none was named:
    /// the rule refuses before looking at it).
    pub route: &'a Route,
    /// The parcel to deliver.
    pub parcel: &'a Parcel,
    /// The home the grant opens.
    pub home: &'a Home,
    /// The geofence's center, opened from its seal when it is sealed;
    /// `None` when the grant has none or the resident's key was erased.
    pub center: Option<pb::GeoPoint>,
    /// How old the camera's last heartbeat may be.
    pub heartbeat_max_age: Duration,
}

/// The first refusal the streams around a grant give for an unlock, in the
/// order route, scan, geofence, camera, household; `None` when all hold.
/// The grant's own rules (revoked, used, window, scoped driver) are its
/// aggregate's, decided on top of this.
pub fn unlock_refusal(
    issued: &pb::GrantIssued,
    asked: &UnlockAsked<'_>,
    around: &AroundGrant<'_>,
) -> Option<Refusal> {
    let scoped = issued.scope.as_ref().map_or("", |s| s.route_id.as_str());
    let route_id = asked.route_id;
    if route_id.is_empty() {
        return Some((Deny::NotOnRoute, "the request names no route".into()));
    }
    if !scoped.is_empty() && scoped != route_id {
        return Some((
            Deny::NotOnRoute,
            format!("the grant is for route {scoped}, not {route_id}"),
        ));
    }
    let Some(plan) = &around.route.plan else {
        return Some((Deny::NotOnRoute, format!("route {route_id} is not planned")));
    };
    let (driver, parcel) = (asked.driver_id, asked.parcel_id);
    if plan.driver_id != driver.as_str() {
        return Some((
            Deny::NotOnRoute,
            format!("route {route_id} is driven by {}", plan.driver_id),
        ));
    }
    if !around
        .route
        .stops
        .iter()
        .any(|s| s.parcel_ids.iter().any(|p| p == parcel.as_str()))
    {
        return Some((
            Deny::NotOnRoute,
            format!("route {route_id} does not carry {parcel}"),
        ));
    }
    let p = around.parcel;
    if p.status != ParcelStatus::Attempting || p.attempt_by.as_deref() != Some(driver.as_str()) {
        return Some((
            Deny::ParcelNotScanned,
            format!("{driver} has not scanned {parcel} for an attempt"),
        ));
    }
    if let Some(refusal) = outside_geofence(issued, asked.position, around.center) {
        return Some(refusal);
    }
    if let Some(refusal) = camera_not_ready(
        &issued.home_id,
        around.home,
        asked.now,
        around.heartbeat_max_age,
    ) {
        return Some(refusal);
    }
    let conditions = issued.conditions.unwrap_or_default();
    if conditions.alarm_to_disarm && around.home.alarm_armed != Some(false) {
        return Some((
            Deny::HouseholdCondition,
            "the alarm is not reported disarmed".into(),
        ));
    }
    if conditions.pet_present && !asked.pet_acknowledged {
        return Some((
            Deny::HouseholdCondition,
            "a pet is at home and the driver has not acknowledged the resident's note".into(),
        ));
    }
    None
}

fn outside_geofence(
    issued: &pb::GrantIssued,
    position: Option<&pb::GeoPoint>,
    center: Option<pb::GeoPoint>,
) -> Option<Refusal> {
    let fence = issued.geofence.as_ref();
    if fence.is_some_and(|f| f.sealed_center.is_some()) && center.is_none() {
        return Some((
            Deny::OutsideGeofence,
            "the home's position was erased on the resident's request".into(),
        ));
    }
    match (center, position) {
        (_, None) => Some((
            Deny::OutsideGeofence,
            "the request carries no position".into(),
        )),
        (Some(c), Some(at)) => {
            let radius = fence.map_or(0, |f| f.radius_m);
            let d =
                crate::geo::great_circle_m((c.latitude, c.longitude), (at.latitude, at.longitude));
            (d.is_nan() || d > f64::from(radius)).then(|| {
                (
                    Deny::OutsideGeofence,
                    format!("{d:.0} m from the door; the geofence is {radius} m"),
                )
            })
        }
        (None, Some(_)) => Some((Deny::OutsideGeofence, "the grant has no geofence".into())),
    }
}

fn camera_not_ready(
    home_id: &str,
    home: &Home,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Option<Refusal> {
    if home.lock.is_none() {
        return Some((
            Deny::CameraOffline,
            format!("home/{home_id} has no registered lock and camera"),
        ));
    }
    if home.camera_ready(now, max_age) {
        return None;
    }
    let fresh = home.camera.online
        && home
            .camera
            .last_heartbeat
            .is_some_and(|t| now.signed_duration_since(t) <= max_age);
    let last = home
        .camera
        .last_heartbeat
        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339());
    Some(if fresh {
        (
            Deny::CameraNotRecording,
            "the camera is online but not recording".into(),
        )
    } else {
        (
            Deny::CameraOffline,
            format!(
                "the camera's last heartbeat was {last}; it must be within {} s",
                max_age.num_seconds()
            ),
        )
    })
}

/// Why an in-home delivery of `parcel` under `grant` cannot close yet, if it
/// cannot: the home's lock must have opened on a nonce redeemed for the
/// parcel and reported the door locked again since. `home_events` are the
/// events of the home the grant opens, in stream order with the instants
/// they occurred (none when the grant was never issued).
pub fn in_home_not_closed(
    grant_id: &GrantId,
    grant: &Grant,
    parcel: &str,
    home_events: impl IntoIterator<Item = (pb::home_event::Event, DateTime<Utc>)>,
) -> Option<String> {
    let Some(home) = grant.home_id() else {
        return Some(format!(
            "delivered.grant_id: grant/{grant_id} was never issued"
        ));
    };
    let Some(nonce) = grant.redeemed(parcel) else {
        return Some(format!(
            "no unlock was redeemed for {parcel} under grant/{grant_id}: an in-home delivery needs the door opened under the grant"
        ));
    };
    match home::entry(home_events, nonce) {
        None => Some(format!(
            "home/{home}'s lock has not reported opening for {parcel}"
        )),
        Some(e) if e.relocked_at.is_none() => Some(format!(
            "home/{home}'s lock has not reported the door relocked since the entry for {parcel}; an in-home delivery closes after the relock"
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::home::Camera;
    use crate::pb::{grant_event::Event as G, home_event::Event as H};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("a test time")
            .with_timezone(&Utc)
    }

    fn issued() -> pb::GrantIssued {
        pb::GrantIssued {
            grant_id: "g-1".into(),
            home_id: "home-1".into(),
            parcel_ids: vec!["SE-1".into()],
            resident_ref: "res-1".into(),
            scope: Some(crate::grant::courier_scope("drv-1", "r-1")),
            geofence: Some(crate::grant::geofence(crate::geo::point(59.33, 18.06), 50)),
            conditions: Some(pb::HouseholdConditions::default()),
            ..Default::default()
        }
    }

    /// Route r-1, driven by drv-1, carrying SE-1.
    fn route() -> Route {
        given::<Route>(&[pb::route_event::Event::Planned(pb::RoutePlanned {
            route_id: "r-1".into(),
            driver_id: "drv-1".into(),
            plan_version: 1,
            stops: vec![pb::PlannedStop {
                parcel_ids: vec!["SE-1".into()],
                ..Default::default()
            }],
            ..Default::default()
        })])
    }

    /// SE-1, scanned by drv-1 for its first attempt.
    fn parcel() -> Parcel {
        Parcel {
            status: ParcelStatus::Attempting,
            attempts: 1,
            attempt_by: Some("drv-1".into()),
            ..Default::default()
        }
    }

    /// A home with a lock and a camera that reported at 10:00 and records.
    fn home() -> Home {
        Home {
            lock: Some(pb::LockRegistered {
                home_id: "home-1".into(),
                lock_id: "lock-1".into(),
                ..Default::default()
            }),
            camera: Camera {
                id: Some("cam-1".into()),
                online: true,
                recording: true,
                last_heartbeat: Some(utc("2026-11-23T10:00:00Z")),
            },
            alarm_armed: Some(false),
            ..Default::default()
        }
    }

    struct World {
        issued: pb::GrantIssued,
        route_id: &'static str,
        position: Option<pb::GeoPoint>,
        pet_acknowledged: bool,
        route: Route,
        parcel: Parcel,
        home: Home,
        center: Option<pb::GeoPoint>,
    }

    fn given_everything_holds() -> World {
        World {
            issued: issued(),
            route_id: "r-1",
            position: Some(pb::GeoPoint {
                latitude: 59.33,
                longitude: 18.06,
            }),
            pet_acknowledged: false,
            route: route(),
            parcel: parcel(),
            home: home(),
            center: Some(pb::GeoPoint {
                latitude: 59.33,
                longitude: 18.06,
            }),
        }
    }

    /// When drv-1 asks to unlock for SE-1 at 10:00:30: the refusal, if any.
    fn when_asked(w: &World) -> Option<Deny> {
        let parcel_id = ParcelId::new("SE-1").expect("an id");
        let driver_id = DriverId::new("drv-1").expect("an id");
        let asked = UnlockAsked {
            route_id: w.route_id,
            parcel_id: &parcel_id,
            driver_id: &driver_id,
            position: w.position.as_ref(),
            pet_acknowledged: w.pet_acknowledged,
            now: utc("2026-11-23T10:00:30Z"),
        };
        let around = AroundGrant {
            route: &w.route,
            parcel: &w.parcel,
            home: &w.home,
            center: w.center,
            heartbeat_max_age: Duration::seconds(60),
        };
        unlock_refusal(&w.issued, &asked, &around).map(|(deny, _)| deny)
    }

    #[test]
    fn an_unlock_goes_ahead_when_every_stream_agrees() {
        assert_eq!(when_asked(&given_everything_holds()), None);
    }

    #[test]
    fn an_unlock_off_the_route_is_refused() {
        let mut w = given_everything_holds();
        w.route_id = "";
        assert_eq!(when_asked(&w), Some(Deny::NotOnRoute));
        let mut w = given_everything_holds();
        w.route_id = "r-2";
        assert_eq!(
            when_asked(&w),
            Some(Deny::NotOnRoute),
            "another route than the scope"
        );
        let mut w = given_everything_holds();
        w.route = Route::default();
        assert_eq!(when_asked(&w), Some(Deny::NotOnRoute), "an unplanned route");
        let mut w = given_everything_holds();
        w.route.stops.clear();
        assert_eq!(
            when_asked(&w),
            Some(Deny::NotOnRoute),
            "a route without the parcel"
        );
        let mut w = given_everything_holds();
        if let Some(plan) = w.route.plan.as_mut() {
            plan.driver_id = "drv-2".into();
        }
        assert_eq!(
            when_asked(&w),
            Some(Deny::NotOnRoute),
            "another driver's route"
        );
    }

    #[test]
    fn an_unlock_for_a_parcel_not_scanned_is_refused() {
        let mut w = given_everything_holds();
        w.parcel.attempt_by = Some("drv-2".into());
        assert_eq!(when_asked(&w), Some(Deny::ParcelNotScanned));
        let mut w = given_everything_holds();
        w.parcel = Parcel::default();
        assert_eq!(when_asked(&w), Some(Deny::ParcelNotScanned));
    }

    #[test]
    fn an_unlock_outside_the_geofence_is_refused() {
        let mut w = given_everything_holds();
        w.position = Some(pb::GeoPoint {
            latitude: 59.34,
            longitude: 18.06,
        });
        assert_eq!(
            when_asked(&w),
            Some(Deny::OutsideGeofence),
            "a kilometre away"
        );
        let mut w = given_everything_holds();
        w.position = None;
        assert_eq!(when_asked(&w), Some(Deny::OutsideGeofence), "no position");
        let mut w = given_everything_holds();
        w.center = None;
        assert_eq!(when_asked(&w), Some(Deny::OutsideGeofence), "no geofence");
        let mut w = given_everything_holds();
        if let Some(f) = w.issued.geofence.as_mut() {
            f.center = None;
            f.sealed_center = Some(pb::Sealed::default());
        }
        w.center = None;
        assert_eq!(
            when_asked(&w),
            Some(Deny::OutsideGeofence),
            "the position erased"
        );
    }

    #[test]
    fn an_unlock_without_a_watching_camera_is_refused() {
        let mut w = given_everything_holds();
        w.home.lock = None;
        assert_eq!(
            when_asked(&w),
            Some(Deny::CameraOffline),
            "no lock registered"
        );
        let mut w = given_everything_holds();
        w.home.camera.last_heartbeat = Some(utc("2026-11-23T09:58:00Z"));
        assert_eq!(
            when_asked(&w),
            Some(Deny::CameraOffline),
            "a stale heartbeat"
        );
        let mut w = given_everything_holds();
        w.home.camera.recording = false;
        assert_eq!(when_asked(&w), Some(Deny::CameraNotRecording));
    }

    #[test]
    fn an_unlock_against_a_household_condition_is_refused() {
        let mut w = given_everything_holds();
        w.issued.conditions = Some(pb::HouseholdConditions {
            alarm_to_disarm: true,
            pet_present: false,
        });
        w.home.alarm_armed = None;
        assert_eq!(when_asked(&w), Some(Deny::HouseholdCondition), "the alarm");
        let mut w = given_everything_holds();
        w.issued.conditions = Some(pb::HouseholdConditions {
            alarm_to_disarm: false,
            pet_present: true,
        });
        assert_eq!(when_asked(&w), Some(Deny::HouseholdCondition), "the pet");
        w.pet_acknowledged = true;
        assert_eq!(when_asked(&w), None, "the pet acknowledged");
    }

    #[test]
    fn the_route_is_refused_before_the_camera() {
        let mut w = given_everything_holds();
        w.route_id = "r-2";
        w.home.lock = None;
        assert_eq!(when_asked(&w), Some(Deny::NotOnRoute));
    }

    fn grant_used_by(nonce: &str) -> Grant {
        let issued = issued();
        given::<Grant>(&[
            G::Issued(issued),
            G::UnlockAuthorized(pb::UnlockAuthorized {
                parcel_id: "SE-1".into(),
                driver_id: "drv-1".into(),
                nonce: nonce.into(),
                valid_until: None,
            }),
            G::Used(pb::GrantUsed {
                parcel_id: "SE-1".into(),
                nonce: nonce.into(),
                lock_id: "lock-1".into(),
            }),
        ])
    }

    fn unlocked(nonce: &str, at: &str) -> (H, DateTime<Utc>) {
        (
            H::Unlocked(pb::LockUnlocked {
                lock_id: "lock-1".into(),
                grant_id: "g-1".into(),
                nonce: nonce.into(),
            }),
            utc(at),
        )
    }

    fn relocked(at: &str) -> (H, DateTime<Utc>) {
        (
            H::Relocked(pb::LockRelocked {
                lock_id: "lock-1".into(),
            }),
            utc(at),
        )
    }

    fn when_closing(grant: &Grant, home: Vec<(H, DateTime<Utc>)>) -> Option<String> {
        in_home_not_closed(&GrantId::new("g-1").expect("an id"), grant, "SE-1", home)
    }

    #[test]
    fn an_in_home_delivery_closes_after_the_relock() {
        let grant = grant_used_by("n-1");
        let home = vec![
            unlocked("n-1", "2026-11-23T10:01:00Z"),
            relocked("2026-11-23T10:02:00Z"),
        ];
        assert_eq!(when_closing(&grant, home), None);
    }

    #[test]
    fn an_in_home_delivery_stays_open_until_the_door_is_relocked() {
        let grant = grant_used_by("n-1");
        let why = when_closing(&grant, vec![unlocked("n-1", "2026-11-23T10:01:00Z")]);
        assert!(why.is_some_and(|w| w.contains("relocked")));
    }

    #[test]
    fn an_in_home_delivery_needs_the_lock_to_open_on_the_grant() {
        let grant = grant_used_by("n-1");
        let why = when_closing(&grant, vec![unlocked("n-2", "2026-11-23T10:01:00Z")]);
        assert!(why.is_some_and(|w| w.contains("has not reported opening")));
        let why = when_closing(&Grant::default(), Vec::new());
        assert!(why.is_some_and(|w| w.contains("was never issued")));
        let issued_only = given::<Grant>(&[G::Issued(issued())]);
        let why = when_closing(&issued_only, Vec::new());
        assert!(why.is_some_and(|w| w.contains("no unlock was redeemed")));
    }
}
