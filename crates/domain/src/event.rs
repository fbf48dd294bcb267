//! One log entry's payload: which category it belongs to, its dotted type
//! name (`parcel.delivered`), and its protobuf bytes.
//!
//! Schemas evolve by adding fields. When a change cannot be expressed that
//! way, the schema version goes up and [`DomainEvent::decode`] learns to
//! upcast the old bytes, so events written years ago stay readable.

use std::fmt;
use std::str::FromStr;

use prost::Message;

use crate::error::{DomainError, Result, invalid};
use crate::pb::{
    self, grant_event::Event as G, home_event::Event as H, parcel_event::Event as P,
    route_event::Event as R,
};

/// The schema version every event is written with today.
pub const SCHEMA_VERSION: u32 = 1;

/// The aggregate type a stream belongs to; on Kafka, one topic each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Category {
    /// `parcel/<parcel id>`.
    Parcel,
    /// `route/<route id>`.
    Route,
    /// `grant/<grant id>`.
    Grant,
    /// `home/<home id>`.
    Home,
}

impl Category {
    /// All categories.
    pub const ALL: [Category; 4] = [
        Category::Parcel,
        Category::Route,
        Category::Grant,
        Category::Home,
    ];

    /// The lowercase name used in stream ids and event types.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Parcel => "parcel",
            Category::Route => "route",
            Category::Grant => "grant",
            Category::Home => "home",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Category {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self> {
        Category::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                invalid(
                    "category",
                    format!("{s:?} is not one of parcel, route, grant, home"),
                )
            })
    }
}

/// The payload of one event, of any category.
#[derive(Debug, Clone, PartialEq)]
pub enum DomainEvent {
    /// An event of a parcel stream.
    Parcel(P),
    /// An event of a route stream.
    Route(R),
    /// An event of a grant stream.
    Grant(G),
    /// An event of a home stream.
    Home(H),
}

impl DomainEvent {
    /// The category of stream this event belongs to.
    pub fn category(&self) -> Category {
        match self {
            DomainEvent::Parcel(_) => Category::Parcel,
            DomainEvent::Route(_) => Category::Route,
            DomainEvent::Grant(_) => Category::Grant,
            DomainEvent::Home(_) => Category::Home,
        }
    }

    /// The dotted, past-tense type name, e.g. `parcel.delivered`.
    pub fn event_type(&self) -> &'static str {
        match self {
            DomainEvent::Parcel(e) => match e {
                P::Manifested(_) => "parcel.manifested",
                P::AssignedToRoute(_) => "parcel.assigned_to_route",
                P::OutForDelivery(_) => "parcel.out_for_delivery",
                P::AttemptStarted(_) => "parcel.attempt_started",
                P::Delivered(_) => "parcel.delivered",
                P::AttemptFailed(_) => "parcel.attempt_failed",
                P::Rescheduled(_) => "parcel.rescheduled",
                P::Returned(_) => "parcel.returned",
                P::LeftOut(_) => "parcel.left_out",
            },
            DomainEvent::Route(e) => match e {
                R::Planned(_) => "route.planned",
                R::Started(_) => "route.started",
                R::StopArrived(_) => "route.stop_arrived",
                R::Completed(_) => "route.completed",
                R::Replanned(_) => "route.replanned",
            },
            DomainEvent::Grant(e) => match e {
                G::Issued(_) => "grant.issued",
                G::UnlockAuthorized(_) => "grant.unlock_authorized",
                G::UnlockDenied(_) => "grant.unlock_denied",
                G::Revoked(_) => "grant.revoked",
                G::Expired(_) => "grant.expired",
                G::Used(_) => "grant.used",
            },
            DomainEvent::Home(e) => match e {
                H::LockRegistered(_) => "home.lock_registered",
                H::Unlocked(_) => "home.unlocked",
                H::Relocked(_) => "home.relocked",
                H::HandleChecked(_) => "home.handle_checked",
                H::DoorLeftOpen(_) => "home.door_left_open",
                H::CameraOnline(_) => "home.camera_online",
                H::CameraOffline(_) => "home.camera_offline",
                H::ClipRecorded(_) => "home.clip_recorded",
                H::TamperDetected(_) => "home.tamper_detected",
                H::Alarm(_) => "home.alarm",
                H::AlertRaised(_) => "home.alert_raised",
                H::Claimed(_) => "home.claimed",
                H::ClaimRefused(_) => "home.claim_refused",
            },
        }
    }

    /// The protobuf bytes of the category message (`ParcelEvent`, ...), at
    /// [`SCHEMA_VERSION`].
    pub fn encode(&self) -> Vec<u8> {
        match self {
            DomainEvent::Parcel(e) => pb::ParcelEvent {
                event: Some(e.clone()),
            }
            .encode_to_vec(),
            DomainEvent::Route(e) => pb::RouteEvent {
                event: Some(e.clone()),
            }
            .encode_to_vec(),
            DomainEvent::Grant(e) => pb::GrantEvent {
                event: Some(e.clone()),
            }
            .encode_to_vec(),
            // The audit chain's link is added when the event is stored
            // (`threshold_log::audit::seal`).
            DomainEvent::Home(e) => pb::HomeEvent {
                event: Some(e.clone()),
                prev_hash: Vec::new(),
            }
            .encode_to_vec(),
        }
    }

    /// Decodes stored bytes, upcasting older schema versions, and checks that
    /// the payload is the type the envelope says it is.
    pub fn decode(event_type: &str, schema_version: u32, payload: &[u8]) -> Result<Self> {
        let fail = |reason: String| DomainError::Decode {
            event_type: event_type.to_owned(),
            schema_version,
            reason,
        };
        if schema_version == 0 || schema_version > SCHEMA_VERSION {
            return Err(fail(format!(
                "this build reads schema versions 1..={SCHEMA_VERSION}"
            )));
        }
        // Version 1 is the only version so far; an upcaster for version N
        // goes here and turns N's bytes into N+1's message.
        let category = event_type
            .split_once('.')
            .map(|(c, _)| c)
            .unwrap_or(event_type);
        let event = match category {
            "parcel" => pb::ParcelEvent::decode(payload)
                .map_err(|e| fail(e.to_string()))?
                .event
                .map(DomainEvent::Parcel),
            "route" => pb::RouteEvent::decode(payload)
                .map_err(|e| fail(e.to_string()))?
                .event
                .map(DomainEvent::Route),
            "grant" => pb::GrantEvent::decode(payload)
                .map_err(|e| fail(e.to_string()))?
                .event
                .map(DomainEvent::Grant),
            "home" => pb::HomeEvent::decode(payload)
                .map_err(|e| fail(e.to_string()))?
                .event
                .map(DomainEvent::Home),
            other => return Err(fail(format!("unknown category {other:?}"))),
        };
        let event = event.ok_or_else(|| {
            fail("the payload holds no event (written by a newer schema?)".into())
        })?;
        if event.event_type() != event_type {
            return Err(fail(format!("the payload is a {}", event.event_type())));
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_keep_their_type() {
        let e = DomainEvent::Parcel(P::AttemptFailed(pb::AttemptFailed {
            attempt: 2,
            reason: pb::FailureReason::NotHome as i32,
            driver_id: "d-1".into(),
            device_id: "h-1".into(),
            note: String::new(),
            sealed_note: None,
        }));
        assert_eq!(e.event_type(), "parcel.attempt_failed");
        assert_eq!(e.category(), Category::Parcel);
        let bytes = e.encode();
        assert_eq!(
            DomainEvent::decode("parcel.attempt_failed", 1, &bytes).unwrap(),
            e
        );
    }

    #[test]
    fn decode_refuses_mismatches_and_unknown_versions() {
        let e = DomainEvent::Grant(G::Expired(pb::GrantExpired {}));
        let bytes = e.encode();
        let err = DomainEvent::decode("grant.revoked", 1, &bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot decode grant.revoked (schema v1): the payload is a grant.expired"
        );
        assert!(DomainEvent::decode("grant.expired", 2, &bytes).is_err());
        assert!(DomainEvent::decode("lorry.parked", 1, &bytes).is_err());
        assert!(DomainEvent::decode("parcel.delivered", 1, &[0xff, 0xff]).is_err());
    }
}
