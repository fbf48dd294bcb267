//! The in-home access grant: a resident lets couriers into one home, for
//! named parcels, inside a window entered in local time.
//!
//! Every unlock decision is made here from the grant's own history and the
//! server's clock (passed in: this module never reads a clock). A refusal is
//! not an error: it is recorded as `UnlockDenied` with its reason, so the
//! audit shows every attempt to get in. The wider checks (route, scan,
//! geofence, camera) join in the access issue.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};

use crate::aggregate::Aggregate;
use crate::country::{timestamp, window_bounds};
use crate::error::{DomainError, Result, invalid};
use crate::ids::{DriverId, GrantId, HomeId, ParcelId};
use crate::pb::{self, UnlockDenyReason as Deny, grant_event::Event};

/// A grant's state, rebuilt from its stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Grant {
    /// What the resident issued; `None` before the grant exists.
    pub issued: Option<pb::GrantIssued>,
    /// Withdrawn by the resident.
    pub revoked: bool,
    /// Its window has ended.
    pub expired: bool,
    /// Parcels delivered under it.
    pub used: BTreeSet<String>,
    /// Parcels an unlock was authorized for.
    pub authorized: BTreeSet<String>,
    /// Every nonce ever authorized: each is good for one unlock.
    pub nonces: BTreeSet<String>,
}

/// What may be asked of a grant.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// The resident issues it. Issuing the same grant again changes nothing.
    Issue(Box<pb::GrantIssued>),
    /// A courier asks to unlock the door for a parcel, now.
    AuthorizeUnlock {
        /// The parcel being delivered.
        parcel_id: ParcelId,
        /// Who asks.
        driver_id: DriverId,
        /// The server's clock.
        now: DateTime<Utc>,
        /// A fresh server nonce for this authorization.
        nonce: String,
        /// How long the authorization may be used.
        valid_for: Duration,
    },
    /// The resident withdraws it.
    Revoke {
        /// Who revoked (the resident's reference, or the carrier).
        by: String,
        /// Why.
        reason: String,
    },
    /// Close it if its window has ended by `now`.
    Expire {
        /// The server's clock.
        now: DateTime<Utc>,
    },
    /// The parcel was delivered under it.
    MarkUsed {
        /// The parcel.
        parcel_id: ParcelId,
    },
}

impl Grant {
    /// The window's UTC bounds, once issued.
    pub fn window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.issued
            .as_ref()
            .and_then(|g| g.window.as_ref())
            .and_then(|w| window_bounds(w).ok())
    }

    fn id(&self) -> String {
        self.issued
            .as_ref()
            .map_or_else(|| "grant".into(), |g| format!("grant/{}", g.grant_id))
    }

    fn denied(parcel: &ParcelId, driver: &DriverId, reason: Deny, detail: String) -> Vec<Event> {
        vec![Event::UnlockDenied(pb::UnlockDenied {
            parcel_id: parcel.to_string(),
            driver_id: driver.to_string(),
            reason: reason as i32,
            detail,
        })]
    }
}

fn validate(g: &pb::GrantIssued) -> Result<()> {
    GrantId::new(&g.grant_id)?;
    HomeId::new(&g.home_id)?;
    if g.parcel_ids.is_empty() {
        return Err(invalid("parcel_ids", "a grant names at least one parcel"));
    }
    for p in &g.parcel_ids {
        ParcelId::new(p)?;
    }
    let w = g
        .window
        .as_ref()
        .ok_or_else(|| invalid("window", "is missing"))?;
    let (start, end) = window_bounds(w)?;
    if end <= start {
        return Err(invalid("window", "ends before it starts"));
    }
    let scope = g
        .scope
        .as_ref()
        .ok_or_else(|| invalid("scope", "is missing"))?;
    DriverId::new(&scope.driver_id)?;
    match &g.geofence {
        Some(f) if f.radius_m > 0 && f.center.is_some() => {}
        _ => return Err(invalid("geofence", "needs a center and a radius above 0 m")),
    }
    if pb::Fallback::try_from(g.fallback).map_or(true, |f| f == pb::Fallback::Unspecified) {
        return Err(invalid("fallback", "is not given"));
    }
    Ok(())
}

impl Aggregate for Grant {
    type Command = Command;
    type Event = Event;

    fn decide(&self, command: &Command) -> Result<Vec<Event>> {
        if let Command::Issue(g) = command {
            validate(g)?;
            return match &self.issued {
                None => Ok(vec![Event::Issued(g.as_ref().clone())]),
                Some(existing) if existing == g.as_ref() => Ok(vec![]),
                Some(_) => Err(DomainError::AlreadyExists(self.id())),
            };
        }
        let Some(issued) = &self.issued else {
            return Err(DomainError::NotFound(self.id()));
        };
        match command {
            Command::Issue(_) => Ok(vec![]), // handled above
            Command::AuthorizeUnlock {
                parcel_id,
                driver_id,
                now,
                nonce,
                valid_for,
            } => {
                let (start, end) = self
                    .window()
                    .ok_or_else(|| invalid("window", "is missing"))?;
                let deny =
                    |reason, detail: String| Ok(Self::denied(parcel_id, driver_id, reason, detail));
                if self.nonces.contains(nonce) {
                    return deny(Deny::Replayed, format!("nonce {nonce} was already issued"));
                }
                if self.revoked {
                    return deny(Deny::Revoked, "the resident revoked the grant".into());
                }
                if self.expired || *now >= end {
                    return deny(Deny::Expired, format!("the window ended at {end}"));
                }
                if !issued.parcel_ids.iter().any(|p| p == parcel_id.as_str()) {
                    return deny(
                        Deny::ParcelNotInGrant,
                        format!("{parcel_id} is not in this grant"),
                    );
                }
                if self.used.contains(parcel_id.as_str()) {
                    return deny(
                        Deny::Used,
                        format!("{parcel_id} was already delivered under it"),
                    );
                }
                if *now < start {
                    return deny(Deny::OutsideWindow, format!("the window opens at {start}"));
                }
                let scoped = issued.scope.as_ref().map(|s| s.driver_id.as_str());
                if scoped != Some(driver_id.as_str()) {
                    return deny(
                        Deny::WrongDriver,
                        format!("the grant is for driver {}", scoped.unwrap_or("?")),
                    );
                }
                Ok(vec![Event::UnlockAuthorized(pb::UnlockAuthorized {
                    parcel_id: parcel_id.to_string(),
                    driver_id: driver_id.to_string(),
                    nonce: nonce.clone(),
                    valid_until: Some(timestamp((*now + *valid_for).min(end))),
                })])
            }
            Command::Revoke { by, reason } => {
                if self.revoked {
                    return Ok(vec![]);
                }
                if self.expired {
                    return Err(DomainError::InvalidState {
                        subject: self.id(),
                        action: "revoke",
                        state: "expired".into(),
                    });
                }
                if issued.parcel_ids.iter().all(|p| self.used.contains(p)) {
                    return Err(DomainError::InvalidState {
                        subject: self.id(),
                        action: "revoke",
                        state: "every parcel is delivered".into(),
                    });
                }
                Ok(vec![Event::Revoked(pb::GrantRevoked {
                    revoked_by: by.clone(),
                    reason: reason.clone(),
                })])
            }
            Command::Expire { now } => {
                let ended = self.window().is_some_and(|(_, end)| *now >= end);
                if self.expired || self.revoked || !ended {
                    return Ok(vec![]);
                }
                Ok(vec![Event::Expired(pb::GrantExpired {})])
            }
            Command::MarkUsed { parcel_id } => {
                if self.used.contains(parcel_id.as_str()) {
                    return Ok(vec![]);
                }
                if !self.authorized.contains(parcel_id.as_str()) {
                    return Err(DomainError::InvalidState {
                        subject: self.id(),
                        action: "mark used",
                        state: format!("no unlock was authorized for {parcel_id}"),
                    });
                }
                Ok(vec![Event::Used(pb::GrantUsed {
                    parcel_id: parcel_id.to_string(),
                })])
            }
        }
    }

    fn evolve(&mut self, event: &Event) {
        match event {
            Event::Issued(g) => self.issued = Some(g.clone()),
            Event::UnlockAuthorized(a) => {
                self.authorized.insert(a.parcel_id.clone());
                self.nonces.insert(a.nonce.clone());
            }
            Event::UnlockDenied(_) => {}
            Event::Revoked(_) => self.revoked = true,
            Event::Expired(_) => self.expired = true,
            Event::Used(u) => {
                self.used.insert(u.parcel_id.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::given;
    use crate::country::{Country, local_window, parse_local};

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn issued(country: Country, start: &str, end: &str) -> pb::GrantIssued {
        pb::GrantIssued {
            grant_id: "g-1".into(),
            home_id: "home-1".into(),
            parcel_ids: vec!["SE-1".into(), "SE-2".into()],
            resident_ref: "res-1".into(),
            window: Some(
                local_window(
                    country,
                    parse_local("s", start).unwrap(),
                    parse_local("e", end).unwrap(),
                )
                .unwrap(),
            ),
            scope: Some(pb::CourierScope {
                driver_id: "drv-1".into(),
                route_id: "r-1".into(),
            }),
            geofence: Some(pb::Geofence {
                center: Some(pb::GeoPoint {
                    latitude: 59.33,
                    longitude: 18.06,
                }),
                radius_m: 50,
            }),
            conditions: Some(pb::HouseholdConditions::default()),
            fallback: pb::Fallback::Locker as i32,
        }
    }

    fn standard() -> pb::GrantIssued {
        issued(Country::Se, "2026-11-23T09:00", "2026-11-23T12:00")
    }

    fn unlock(parcel: &str, driver: &str, now: &str, nonce: &str) -> Command {
        Command::AuthorizeUnlock {
            parcel_id: ParcelId::new(parcel).unwrap(),
            driver_id: DriverId::new(driver).unwrap(),
            now: utc(now),
            nonce: nonce.into(),
            valid_for: Duration::minutes(2),
        }
    }

    fn denial(events: Vec<Event>) -> Deny {
        match events.as_slice() {
            [Event::UnlockDenied(d)] => Deny::try_from(d.reason).unwrap(),
            other => panic!("expected one denial, got {other:?}"),
        }
    }

    fn authorized(parcel: &str, nonce: &str) -> Event {
        Event::UnlockAuthorized(pb::UnlockAuthorized {
            parcel_id: parcel.into(),
            driver_id: "drv-1".into(),
            nonce: nonce.into(),
            valid_until: None,
        })
    }

    #[test]
    fn issuing_validates_and_is_idempotent() {
        let g = standard();
        assert_eq!(
            given::<Grant>(&[])
                .decide(&Command::Issue(Box::new(g.clone())))
                .unwrap(),
            vec![Event::Issued(g.clone())]
        );
        let state = given::<Grant>(&[Event::Issued(g.clone())]);
        assert_eq!(
            state.decide(&Command::Issue(Box::new(g.clone()))).unwrap(),
            vec![]
        );
        let mut other = g.clone();
        other.parcel_ids.push("SE-3".into());
        assert_eq!(
            state.decide(&Command::Issue(Box::new(other))).unwrap_err(),
            DomainError::AlreadyExists("grant/g-1".into())
        );
        for (field, broken) in [
            (
                "parcel_ids",
                pb::GrantIssued {
                    parcel_ids: vec![],
                    ..g.clone()
                },
            ),
            (
                "geofence",
                pb::GrantIssued {
                    geofence: None,
                    ..g.clone()
                },
            ),
            (
                "fallback",
                pb::GrantIssued {
                    fallback: 0,
                    ..g.clone()
                },
            ),
            (
                "scope",
                pb::GrantIssued {
                    scope: None,
                    ..g.clone()
                },
            ),
        ] {
            let err = given::<Grant>(&[])
                .decide(&Command::Issue(Box::new(broken)))
                .unwrap_err();
            assert!(
                matches!(err, DomainError::Invalid { field: f, .. } if f == field),
                "{err}"
            );
        }
    }

    #[test]
    fn an_unlock_inside_the_window_by_the_scoped_driver_is_authorized_once_per_nonce() {
        let g = given::<Grant>(&[Event::Issued(standard())]);
        // 10:30 Stockholm is 09:30 UTC in November.
        let events = g
            .decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n-1"))
            .unwrap();
        match events.as_slice() {
            [Event::UnlockAuthorized(a)] => {
                assert_eq!(a.nonce, "n-1");
                assert_eq!(a.valid_until, Some(timestamp(utc("2026-11-23T09:32:00Z"))));
            }
            other => panic!("{other:?}"),
        }
        let g = given::<Grant>(&[Event::Issued(standard()), authorized("SE-1", "n-1")]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:31:00Z", "n-1"))
                    .unwrap()
            ),
            Deny::Replayed
        );
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let fresh = given::<Grant>(&[Event::Issued(standard())]);
        let cases = [
            (
                &fresh,
                unlock("SE-1", "drv-1", "2026-11-23T07:59:00Z", "a"),
                Deny::OutsideWindow,
            ),
            (
                &fresh,
                unlock("SE-1", "drv-1", "2026-11-23T11:00:00Z", "b"),
                Deny::Expired,
            ),
            (
                &fresh,
                unlock("SE-9", "drv-1", "2026-11-23T09:30:00Z", "c"),
                Deny::ParcelNotInGrant,
            ),
            (
                &fresh,
                unlock("SE-1", "drv-2", "2026-11-23T09:30:00Z", "d"),
                Deny::WrongDriver,
            ),
        ];
        for (state, command, reason) in cases {
            assert_eq!(denial(state.decide(&command).unwrap()), reason);
        }
        let revoked = given::<Grant>(&[
            Event::Issued(standard()),
            Event::Revoked(pb::GrantRevoked::default()),
        ]);
        assert_eq!(
            denial(
                revoked
                    .decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "e"))
                    .unwrap()
            ),
            Deny::Revoked
        );
        let used = given::<Grant>(&[
            Event::Issued(standard()),
            authorized("SE-1", "n-1"),
            Event::Used(pb::GrantUsed {
                parcel_id: "SE-1".into(),
            }),
        ]);
        assert_eq!(
            denial(
                used.decide(&unlock("SE-1", "drv-1", "2026-11-23T09:40:00Z", "f"))
                    .unwrap()
            ),
            Deny::Used
        );
        // The other parcel of the grant can still be delivered.
        assert!(matches!(
            used.decide(&unlock("SE-2", "drv-1", "2026-11-23T09:40:00Z", "g"))
                .unwrap()[0],
            Event::UnlockAuthorized(_)
        ));
        let expired = given::<Grant>(&[
            Event::Issued(standard()),
            Event::Expired(pb::GrantExpired {}),
        ]);
        assert_eq!(
            denial(
                expired
                    .decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "h"))
                    .unwrap()
            ),
            Deny::Expired
        );
    }

    #[test]
    fn a_grant_that_was_never_issued_cannot_be_used() {
        let err = given::<Grant>(&[])
            .decide(&unlock("SE-1", "drv-1", "2026-11-23T09:30:00Z", "n"))
            .unwrap_err();
        assert_eq!(err, DomainError::NotFound("grant".into()));
    }

    #[test]
    fn windows_hold_across_the_spring_forward_night() {
        // 02:30-04:00 local on 2026-03-29 in Stockholm: 02:30 does not exist,
        // so the window opens at 03:00 CEST = 01:00 UTC.
        let g = given::<Grant>(&[Event::Issued(issued(
            Country::Se,
            "2026-03-29T02:30",
            "2026-03-29T04:00",
        ))]);
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-03-29T00:55:00Z", "a"))
                    .unwrap()
            ),
            Deny::OutsideWindow
        );
        assert!(matches!(
            g.decide(&unlock("SE-1", "drv-1", "2026-03-29T01:05:00Z", "b"))
                .unwrap()[0],
            Event::UnlockAuthorized(_)
        ));
        // 04:00 CEST is 02:00 UTC.
        assert_eq!(
            denial(
                g.decide(&unlock("SE-1", "drv-1", "2026-03-29T02:00:00Z", "c"))
                    .unwrap()
            ),
            Deny::Expired
        );
        // Helsinki is an hour ahead: 03:30-05:00 local opens at 04:00 EEST = 01:00 UTC.
        let fi = given::<Grant>(&[Event::Issued(issued(
            Country::Fi,
            "2026-03-29T03:30",
            "2026-03-29T05:00",
        ))]);
        assert_eq!(
            denial(
                fi.decide(&unlock("SE-1", "drv-1", "2026-03-29T00:59:00Z", "d"))
                    .unwrap()
            ),
            Deny::OutsideWindow
        );
        assert!(matches!(
            fi.decide(&unlock("SE-1", "drv-1", "2026-03-29T01:01:00Z", "e"))
                .unwrap()[0],
            Event::UnlockAuthorized(_)
        ));
    }

    #[test]
    fn revoke_expire_and_use_follow_the_rules() {
        let g = given::<Grant>(&[Event::Issued(standard())]);
        let revoke = Command::Revoke {
            by: "res-1".into(),
            reason: "changed my mind".into(),
        };
        assert!(matches!(g.decide(&revoke).unwrap()[0], Event::Revoked(_)));
        let revoked = given::<Grant>(&[
            Event::Issued(standard()),
            Event::Revoked(pb::GrantRevoked::default()),
        ]);
        assert_eq!(
            revoked.decide(&revoke).unwrap(),
            vec![],
            "revoking twice is harmless"
        );

        assert_eq!(
            g.decide(&Command::Expire {
                now: utc("2026-11-23T10:00:00Z")
            })
            .unwrap(),
            vec![],
            "not yet"
        );
        assert_eq!(
            g.decide(&Command::Expire {
                now: utc("2026-11-23T11:00:00Z")
            })
            .unwrap(),
            vec![Event::Expired(pb::GrantExpired {})]
        );
        let expired = given::<Grant>(&[
            Event::Issued(standard()),
            Event::Expired(pb::GrantExpired {}),
        ]);
        assert!(expired.decide(&revoke).is_err());

        let used = Command::MarkUsed {
            parcel_id: ParcelId::new("SE-1").unwrap(),
        };
        assert!(g.decide(&used).is_err(), "no unlock was authorized");
        let after_unlock = given::<Grant>(&[Event::Issued(standard()), authorized("SE-1", "n")]);
        assert_eq!(
            after_unlock.decide(&used).unwrap(),
            vec![Event::Used(pb::GrantUsed {
                parcel_id: "SE-1".into()
            })]
        );
        let all_used = given::<Grant>(&[
            Event::Issued(standard()),
            authorized("SE-1", "n"),
            authorized("SE-2", "m"),
            Event::Used(pb::GrantUsed {
                parcel_id: "SE-1".into(),
            }),
            Event::Used(pb::GrantUsed {
                parcel_id: "SE-2".into(),
            }),
        ]);
        assert_eq!(all_used.decide(&used).unwrap(), vec![]);
        assert!(all_used.decide(&revoke).is_err(), "nothing left to revoke");
    }
}
