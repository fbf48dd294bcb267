//! What the days hold for each parcel, drawn from the seed and the
//! parcel's id alone: whether the resident revokes, what happens at the
//! door attempt by attempt (one attempt a delivery day), and the trouble an
//! in-home door has on purpose.
//!
//! Pure: nothing here calls the server or reads a clock, so the same seed
//! gives the same fates whatever the timing and concurrency.

use std::hash::{Hash, Hasher};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::{AttemptFailedReport, DeliveredReport};
use threshold_domain::pb;

use super::parcels::Parcel;

/// Attempts before a parcel goes back to its sender: the planner's rule.
const MAX_ATTEMPTS: usize = threshold_planning_service::MAX_ATTEMPTS as usize;

/// Share of in-home grants their resident revokes before the driver comes.
const REVOKED: f64 = 0.04;

/// What goes wrong at an in-home door, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    /// The camera went offline in the morning and stays so.
    CameraOffline,
    /// The driver asks from down the street.
    OutsideGeofence,
    /// The resident forgot to disarm the alarm.
    AlarmLeftArmed,
    /// The lock's unlock request is captured and replayed after the entry.
    Replayed,
    /// The courier leaves without relocking and comes back minutes later.
    DoorLeftOpen,
    /// The camera drops (Wi-Fi deauthentication) while the door is open.
    CameraDrops,
}

/// An in-home parcel's home and what goes wrong there.
pub(super) struct HomeFate {
    pub(super) trouble: Option<Trouble>,
    pub(super) fallback: pb::Fallback,
    pub(super) pet: bool,
    pub(super) alarm: bool,
}

/// What the days hold for a parcel, drawn from the seed and the parcel's
/// id only.
pub(super) struct Fate {
    /// The resident revokes the in-home grant before the driver comes.
    pub(super) revoked: bool,
    /// What happens at the door, attempt by attempt (day by day), when the
    /// parcel is not delivered in-home (the last one delivered, or all failed).
    pub(super) door: Vec<Report>,
    /// For in-home parcels: the home.
    pub(super) home: HomeFate,
}

/// The fate of `parcel` under `seed`, the same whichever day it is driven.
pub(super) fn fate(seed: u64, parcel: &Parcel) -> Fate {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parcel.id.hash(&mut h);
    let mut rng = SmallRng::seed_from_u64(seed ^ h.finish());
    let revoked = rng.random_bool(REVOKED);
    let mut door = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        // At the door a recipient is out about a third of the time: about
        // 1.5 drives per parcel.
        if rng.random_bool(0.64) {
            let method = if rng.random_bool(0.15) {
                pb::DeliveryMethod::Neighbour
            } else {
                pb::DeliveryMethod::Doorstep
            };
            door.push(Report::Delivered(DeliveredReport {
                method: method as i32,
                grant_id: String::new(),
                position: None,
            }));
            break;
        }
        let reason = [
            pb::FailureReason::NotHome,
            pb::FailureReason::NotHome,
            pb::FailureReason::NotHome,
            pb::FailureReason::NoAccess,
            pb::FailureReason::Refused,
        ][rng.random_range(0..5)];
        door.push(Report::Failed(AttemptFailedReport {
            reason: reason as i32,
            note: String::new(),
        }));
    }
    // Far more trouble than a real day has, so that a short day shows
    // every kind of it.
    let trouble = [
        (0.05, Trouble::CameraOffline),
        (0.05, Trouble::OutsideGeofence),
        (0.05, Trouble::AlarmLeftArmed),
        (0.05, Trouble::Replayed),
        (0.05, Trouble::DoorLeftOpen),
        (0.05, Trouble::CameraDrops),
    ];
    let draw: f64 = rng.random();
    let mut sum = 0.0;
    let trouble = trouble.iter().find_map(|(p, t)| {
        sum += p;
        (draw < sum).then_some(*t)
    });
    let fallback = match rng.random_range(0..20) {
        0..12 => pb::Fallback::Doorstep,
        12..16 => pb::Fallback::Locker,
        16..19 => pb::Fallback::Neighbour,
        _ => pb::Fallback::Return,
    };
    let pet = rng.random_bool(0.2);
    let alarm = trouble == Some(Trouble::AlarmLeftArmed) || rng.random_bool(0.15);
    Fate {
        revoked,
        door,
        home: HomeFate {
            trouble,
            fallback,
            pet,
            alarm,
        },
    }
}
