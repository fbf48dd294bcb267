//! Random sequences of issue, revoke, unlock, redeem, expire and clock moves
//! against the grant: whatever the order, nothing opens a door it should not.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use threshold_domain::country::{instant, local_window, parse_local};
use threshold_domain::enrolment::Bound;
use threshold_domain::grant::{Command, Grant};
use threshold_domain::{Aggregate, Country, DriverId, GrantId, ParcelId, fold, pb};

type Event = pb::grant_event::Event;

#[derive(Debug, Clone)]
enum Op {
    Revoke,
    Unlock {
        parcel: usize,
        right_driver: bool,
    },
    /// Redeem the `k`-th nonce authorized so far (modulo), or a made-up one.
    Redeem {
        k: Option<usize>,
    },
    Expire,
    /// Move the server's clock by this many minutes (back as well: a
    /// simulation's clock is whatever its requests say).
    Clock(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => Just(Op::Revoke),
        6 => (0..3usize, prop::bool::weighted(0.8))
            .prop_map(|(parcel, right_driver)| Op::Unlock { parcel, right_driver }),
        5 => prop::option::weighted(0.9, 0..8usize).prop_map(|k| Op::Redeem { k }),
        1 => Just(Op::Expire),
        4 => (-30i64..120).prop_map(Op::Clock),
    ]
}

const PARCELS: [&str; 3] = ["SE-1", "SE-2", "SE-9"];

/// 09:00–12:00 in Stockholm on 2026-03-29, the spring-forward day
/// (07:00–10:00 UTC), for two of the three parcels.
fn issued() -> pb::GrantIssued {
    pb::GrantIssued {
        grant_id: "g-1".into(),
        home_id: "home-1".into(),
        parcel_ids: vec!["SE-1".into(), "SE-2".into()],
        resident_ref: "res-1".into(),
        window: Some(
            local_window(
                Country::Se,
                parse_local("start", "2026-03-29T09:00").expect("valid"),
                parse_local("end", "2026-03-29T12:00").expect("valid"),
            )
            .expect("valid"),
        ),
        scope: Some(threshold_domain::grant::courier_scope("drv-1", "r-1")),
        geofence: Some(threshold_domain::grant::geofence(
            threshold_domain::geo::point(59.33, 18.06),
            50,
        )),
        conditions: None,
        fallback: pb::Fallback::Doorstep as i32,
    }
}

fn record(state: &mut Grant, events: &[Event], history: &mut Vec<Event>) {
    for e in events {
        state.evolve(e);
        history.push(e.clone());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn no_sequence_opens_a_door_it_should_not(ops in prop::collection::vec(op(), 1..60)) {
        let id = GrantId::new("g-1").expect("valid");
        let (start, end) = (
            Utc.with_ymd_and_hms(2026, 3, 29, 7, 0, 0).single().expect("valid"),
            Utc.with_ymd_and_hms(2026, 3, 29, 10, 0, 0).single().expect("valid"),
        );
        let mut now: DateTime<Utc> = start - Duration::minutes(45);
        let mut state = Grant::default();
        let mut history: Vec<Event> = Vec::new();
        let g = issued();
        let bound = Bound::claimed("hh-1", &g.resident_ref, g.parcel_ids.len());
        let first = state.decide(&Command::Issue { grant: Box::new(g), bound }).expect("valid");
        record(&mut state, &first, &mut history);
        let mut authorized: Vec<String> = Vec::new();
        let (mut revoked, mut expired) = (false, false);
        let mut spent = BTreeSet::new();
        let mut used = BTreeSet::new();
        for (n, op) in ops.into_iter().enumerate() {
            let decided = match op {
                Op::Clock(m) => {
                    now += Duration::minutes(m);
                    continue;
                }
                Op::Revoke => state.decide(&Command::Revoke {
                    grant_id: id.clone(),
                    by: "res-1".into(),
                    reason: "random".into(),
                }),
                Op::Expire => state.decide(&Command::Expire { grant_id: id.clone(), now }),
                Op::Unlock { parcel, right_driver } => state.decide(&Command::AuthorizeUnlock {
                    grant_id: id.clone(),
                    parcel_id: ParcelId::new(PARCELS[parcel]).expect("valid"),
                    driver_id: DriverId::new(if right_driver { "drv-1" } else { "drv-2" })
                        .expect("valid"),
                    now,
                    nonce: format!("n-{n}"),
                    valid_for: Duration::minutes(2),
                    elsewhere: None,
                }),
                Op::Redeem { k } => state.decide(&Command::Redeem {
                    grant_id: id.clone(),
                    nonce: match k {
                        Some(k) if !authorized.is_empty() => {
                            authorized[k % authorized.len()].clone()
                        }
                        _ => "forged".into(),
                    },
                    lock_id: "lock-1".into(),
                    now,
                    signed: true,
                }),
            };
            // A command refused outright (revoking an expired grant)
            // records nothing.
            let Ok(events) = decided else { continue };
            for e in &events {
                match e {
                    Event::UnlockAuthorized(a) => {
                        prop_assert!(!revoked && !expired, "authorized after a revoke or expiry");
                        prop_assert!(start <= now && now < end, "authorized outside the window at {}", now);
                        prop_assert_eq!(&a.driver_id, "drv-1");
                        prop_assert!(a.parcel_id != "SE-9", "a parcel not in the grant");
                        prop_assert!(!used.contains(&a.parcel_id), "a used parcel authorized again");
                        let until = instant(a.valid_until.as_ref().expect("valid")).expect("valid");
                        prop_assert!(until <= end && until > now);
                        authorized.push(a.nonce.clone());
                    }
                    Event::Used(u) => {
                        prop_assert!(!revoked && !expired, "redeemed after a revoke or expiry");
                        prop_assert!(authorized.contains(&u.nonce), "redeemed an unknown nonce");
                        prop_assert!(spent.insert(u.nonce.clone()), "a nonce redeemed twice");
                        prop_assert!(used.insert(u.parcel_id.clone()), "a parcel used twice");
                        let a = &state.nonces[&u.nonce];
                        prop_assert!(a.valid_until.is_some_and(|t| now <= t), "redeemed too late");
                    }
                    Event::Revoked(_) => {
                        prop_assert!(!expired);
                        revoked = true;
                    }
                    Event::Expired(_) => {
                        prop_assert!(now >= end && !revoked);
                        expired = true;
                    }
                    Event::UnlockDenied(_) | Event::Issued(_) => {}
                }
            }
            record(&mut state, &events, &mut history);
        }
        // The state is its history folded: nothing but events decides it.
        prop_assert_eq!(fold::<Grant>(history.iter()), state);
    }
}
