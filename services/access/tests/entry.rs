//! An in-home entry end to end: every rule that can refuse an unlock, the
//! lock redeeming its nonce once, the relock, the alerts, and the receipt.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use threshold_access_service::device::{Signed, key_from_seed};
use threshold_api::v1::{
    AuthorizeUnlockRequest, ReceiptRequest, RedeemUnlockRequest, RevokeGrantRequest,
};
use threshold_domain::{DomainEvent, pb};

type Deny = pb::UnlockDenyReason;

/// lock-1's request to redeem `nonce` under g-1.
fn redeem(nonce: &str) -> RedeemUnlockRequest {
    redeem_under("g-1", nonce)
}

async fn report(s: &mut Running, e: pb::home_event::Event, at: DateTime<Utc>) -> Vec<String> {
    s.vendor
        .record_device_event(device(e, at, &key()))
        .await
        .expect("device event");
    home_types(s).await
}

async fn grant_events(s: &Running) -> Vec<pb::grant_event::Event> {
    s.log
        .read_stream(&"grant/g-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.decode().expect("decode") {
            DomainEvent::Grant(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn unlocked(nonce: &str) -> pb::home_event::Event {
    pb::home_event::Event::Unlocked(pb::LockUnlocked {
        lock_id: "lock-1".into(),
        grant_id: "g-1".into(),
        nonce: nonce.into(),
    })
}

fn relocked() -> pb::home_event::Event {
    pb::home_event::Event::Relocked(pb::LockRelocked {
        lock_id: "lock-1".into(),
    })
}

#[tokio::test]
async fn every_rule_around_the_grant_refuses_with_its_reason_and_the_fallback() {
    let mut s = serve().await;
    let now = Utc::now();
    door(&mut s, now, false).await;
    let mut g = grant("g-1");
    g.conditions = Some(pb::HouseholdConditions {
        pet_present: true,
        alarm_to_disarm: true,
    });
    s.resident.issue_grant(g).await.expect("issue");

    let ok = || {
        let mut r = unlock("g-1", "drv-1");
        r.pet_acknowledged = true;
        r
    };
    let mut cases: Vec<(AuthorizeUnlockRequest, Deny)> = Vec::new();
    let mut r = ok();
    r.route_id = "r-2".into();
    cases.push((r, Deny::NotOnRoute));
    let mut r = ok();
    r.position = Some(pb::GeoPoint {
        latitude: 59.334,
        longitude: 18.06,
    });
    cases.push((r, Deny::OutsideGeofence));
    let mut r = ok();
    r.position = None;
    cases.push((r, Deny::OutsideGeofence));
    // The alarm has never been reported disarmed.
    cases.push((ok(), Deny::HouseholdCondition));
    for (r, want) in cases {
        let reply = ask(&mut s, r).await;
        assert!(!reply.authorized);
        assert_eq!(Deny::try_from(reply.reason), Ok(want), "{}", reply.detail);
        assert_eq!(reply.fallback, pb::Fallback::Locker as i32);
        assert!(!reply.detail.is_empty());
    }
    report(
        &mut s,
        pb::home_event::Event::Alarm(pb::AlarmState {
            device_id: "alarm-1".into(),
            armed: false,
        }),
        now,
    )
    .await;
    // The pet note not acknowledged.
    let reply = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert_eq!(reply.reason, Deny::HouseholdCondition as i32);
    assert!(reply.detail.contains("pet"), "{}", reply.detail);
    // The camera, online but not recording; then offline.
    report(
        &mut s,
        pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-1".into(),
            recording: false,
        }),
        now,
    )
    .await;
    assert_eq!(
        ask(&mut s, ok()).await.reason,
        Deny::CameraNotRecording as i32
    );
    report(
        &mut s,
        pb::home_event::Event::CameraOffline(pb::CameraOffline {
            camera_id: "cam-1".into(),
            reason: "wifi deauthenticated".into(),
        }),
        now,
    )
    .await;
    assert_eq!(ask(&mut s, ok()).await.reason, Deny::CameraOffline as i32);
    // A heartbeat older than a minute is no heartbeat.
    report(
        &mut s,
        pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-1".into(),
            recording: true,
        }),
        now - Duration::seconds(90),
    )
    .await;
    assert_eq!(ask(&mut s, ok()).await.reason, Deny::CameraOffline as i32);
    report(
        &mut s,
        pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: "cam-1".into(),
            recording: true,
        }),
        Utc::now(),
    )
    .await;
    let yes = ask(&mut s, ok()).await;
    assert!(yes.authorized, "{}", yes.detail);

    // Every refusal is on the grant's stream with its reason.
    let denied: Vec<i32> = grant_events(&s)
        .await
        .into_iter()
        .filter_map(|e| match e {
            pb::grant_event::Event::UnlockDenied(d) => Some(d.reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        denied,
        [
            Deny::NotOnRoute,
            Deny::OutsideGeofence,
            Deny::OutsideGeofence,
            Deny::HouseholdCondition,
            Deny::HouseholdCondition,
            Deny::CameraNotRecording,
            Deny::CameraOffline,
            Deny::CameraOffline,
        ]
        .map(|d| d as i32)
    );
}

#[tokio::test]
async fn a_parcel_not_scanned_by_the_driver_opens_nothing() {
    let mut s = serve_at_the_door().await;
    // SE-2 is addressed to the same household as SE-1.
    manifest_at(s.sandbox.planner(), &["SE-2"], &address()).await;
    let mut g = grant("g-1");
    g.parcel_ids.push("SE-2".into());
    s.resident.issue_grant(g).await.expect("issue");
    let mut r = unlock("g-1", "drv-1");
    r.parcel_id = "SE-2".into();
    let reply = ask(&mut s, r).await;
    // SE-2 is not on route r-1 either: the route is checked first.
    assert_eq!(reply.reason, Deny::NotOnRoute as i32, "{}", reply.detail);
    facts(
        s.log.as_ref(),
        "route/r-1",
        vec![DomainEvent::Route(pb::route_event::Event::Replanned(
            pb::RouteReplanned {
                plan_version: 2,
                stops: vec![pb::PlannedStop {
                    index: 0,
                    parcel_ids: vec!["SE-1".into(), "SE-2".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))],
        Utc::now(),
    )
    .await;
    let mut r = unlock("g-1", "drv-1");
    r.parcel_id = "SE-2".into();
    let reply = ask(&mut s, r).await;
    assert_eq!(
        reply.reason,
        Deny::ParcelNotScanned as i32,
        "{}",
        reply.detail
    );
}

#[tokio::test]
async fn a_nonce_opens_the_door_once_and_a_replay_is_refused_and_recorded() {
    let mut s = serve().await;
    let now = Utc::now();
    door(&mut s, now, false).await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let yes = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert!(yes.authorized, "{}", yes.detail);

    // Unsigned or signed by another key: refused, recorded, nonce unspent.
    let mut forged = redeem(&yes.nonce);
    forged.sign(&key_from_seed([9; 32]));
    let no = s
        .vendor
        .redeem_unlock(forged)
        .await
        .expect("decided")
        .into_inner();
    assert_eq!(
        (no.open, no.reason),
        (false, Deny::BadSignature as i32),
        "{}",
        no.detail
    );
    let open = s
        .vendor
        .redeem_unlock(redeem(&yes.nonce))
        .await
        .expect("decided")
        .into_inner();
    assert!(open.open, "{}", open.detail);
    // The captured request, sent again.
    let replay = s
        .vendor
        .redeem_unlock(redeem(&yes.nonce))
        .await
        .expect("decided")
        .into_inner();
    assert_eq!((replay.open, replay.reason), (false, Deny::Replayed as i32));
    let unknown = s
        .vendor
        .redeem_unlock(redeem("made-up"))
        .await
        .expect("decided")
        .into_inner();
    assert_eq!(unknown.reason, Deny::NonceUnknown as i32);
    // The parcel is used: a new authorization is refused.
    let again = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert_eq!(again.reason, Deny::Used as i32);
    let kinds: Vec<&str> = grant_events(&s)
        .await
        .iter()
        .map(|e| match e {
            pb::grant_event::Event::Issued(_) => "issued",
            pb::grant_event::Event::UnlockAuthorized(_) => "authorized",
            pb::grant_event::Event::UnlockDenied(_) => "denied",
            pb::grant_event::Event::Used(_) => "used",
            _ => "other",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "issued",
            "authorized",
            "denied",
            "used",
            "denied",
            "denied",
            "denied"
        ]
    );

    // The lock reports the entry; a receipt waits for the relock.
    report(&mut s, unlocked(&yes.nonce), Utc::now()).await;
    let receipt = ReceiptRequest {
        grant_id: "g-1".into(),
        parcel_id: "SE-1".into(),
    };
    let early = s
        .resident
        .get_receipt(receipt.clone())
        .await
        .expect_err("not relocked");
    assert_eq!(early.code(), tonic::Code::FailedPrecondition);
    let types = report(&mut s, relocked(), Utc::now()).await;
    assert!(
        !types.contains(&"home.alert_raised".to_owned()),
        "{types:?}"
    );
    let r = s
        .resident
        .get_receipt(receipt)
        .await
        .expect("receipt")
        .into_inner();
    let stored = s
        .log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("read");
    let head = threshold_log::audit::verify(&stored).expect("chain");
    assert_eq!(r.chain_head, threshold_log::audit::hex(&head));
    assert_eq!(r.chain_version, stored.len() as u64);
    assert_eq!(r.lock_id, "lock-1");
    let t = |x: Option<prost_types::Timestamp>| {
        threshold_domain::country::instant(&x.expect("time")).expect("instant")
    };
    assert!(t(r.relocked_at) >= t(r.unlocked_at));
}

#[tokio::test]
async fn a_revoke_recorded_while_the_handheld_was_offline_keeps_the_door_shut() {
    let mut s = serve_at_the_door().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let yes = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert!(yes.authorized);
    s.resident
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-1".into(),
            by: "res-1".into(),
            reason: "changed my mind".into(),
        })
        .await
        .expect("revoke");
    let no = s
        .vendor
        .redeem_unlock(redeem(&yes.nonce))
        .await
        .expect("decided")
        .into_inner();
    assert_eq!((no.open, no.reason), (false, Deny::Revoked as i32));
    // A lock that opens anyway is recorded, with an alert.
    let types = report(&mut s, unlocked(&yes.nonce), Utc::now()).await;
    assert_eq!(types.last().map(String::as_str), Some("home.alert_raised"));
}

#[tokio::test]
async fn a_door_left_unlocked_or_unwatched_raises_alerts_once() {
    let mut s = serve().await;
    let t0 = Utc::now();
    door(&mut s, t0, false).await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let yes = ask(&mut s, unlock("g-1", "drv-1")).await;
    s.vendor
        .redeem_unlock(redeem(&yes.nonce))
        .await
        .expect("redeem");
    report(&mut s, unlocked(&yes.nonce), t0).await;
    assert_eq!(s.access.watch(t0 + Duration::seconds(30)).await.unwrap(), 0);
    // Four minutes on, still open, and the camera silent since t0: a
    // server started afresh on the same log finds the open door.
    let restarted = threshold_access_service::Access::new(std::sync::Arc::clone(&s.log));
    assert_eq!(restarted.watch(t0 + Duration::minutes(4)).await.unwrap(), 2);
    assert_eq!(s.access.watch(t0 + Duration::minutes(5)).await.unwrap(), 0);
    let alerts: Vec<i32> = s
        .log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.decode().expect("decode") {
            DomainEvent::Home(pb::home_event::Event::AlertRaised(a)) => {
                assert_eq!(a.grant_id, "g-1");
                Some(a.kind)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        alerts,
        [
            pb::AlertKind::RelockOverdue as i32,
            pb::AlertKind::CameraOfflineWhileOpen as i32
        ]
    );
    // Relocked: nothing more to watch. (Reported at the server's time: a
    // device may not date a report ahead of it.)
    report(&mut s, relocked(), Utc::now()).await;
    // The resident's receipt tells of both.
    let receipt = receipt(&mut s).await;
    assert_eq!(
        receipt.alerts,
        [
            pb::AlertKind::RelockOverdue as i32,
            pb::AlertKind::CameraOfflineWhileOpen as i32
        ]
    );
    assert_eq!(s.access.watch(t0 + Duration::minutes(30)).await.unwrap(), 0);
    assert!(
        !matches!(
            grant_events(&s).await.last(),
            Some(pb::grant_event::Event::Expired(_))
        ),
        "the window is still open"
    );
    // Past the window's end the watcher closes the grant, once.
    assert_eq!(s.access.watch(t0 + Duration::hours(2)).await.unwrap(), 0);
    s.access.watch(t0 + Duration::hours(3)).await.unwrap();
    let expired = grant_events(&s)
        .await
        .iter()
        .filter(|e| matches!(e, pb::grant_event::Event::Expired(_)))
        .count();
    assert_eq!(expired, 1);
    // The audit chain holds over the server's alerts too.
    let stored = s
        .log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("read");
    threshold_log::audit::verify(&stored).expect("intact chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_revokes_unlocks_and_redeems_keep_one_order_per_grant() {
    let mut s = serve_at_the_door().await;
    let grants: Vec<String> = (0..8).map(|n| format!("g-{n}")).collect();
    for g in &grants {
        s.resident.issue_grant(grant(g)).await.expect("issue");
    }
    let mut tasks = tokio::task::JoinSet::new();
    for g in &grants {
        for n in 0..24 {
            tasks.spawn(race_step(
                g.clone(),
                n % 8 == 3,
                s.resident.clone(),
                s.handheld.clone(),
                s.vendor.clone(),
            ));
        }
    }
    let mut revokes_that_changed = 0;
    while let Some(t) = tasks.join_next().await {
        revokes_that_changed += t.expect("task").0;
    }
    let mut revoked = 0;
    for g in &grants {
        // 21 unlock requests, one revoke (the other two found it revoked or,
        // when the parcel went in first, all three were refused), one issue.
        revoked += u32::from(assert_one_order(
            g,
            &grant_history(s.log.as_ref(), g).await,
            21,
        ));
    }
    assert_eq!(
        revokes_that_changed, revoked,
        "each revoked grant revoked once"
    );
    // The race ran both ways: some revoke came before any entry.
    assert!(revoked > 0, "no grant was revoked");
}
