//! The access part of the adversarial suite: what a device, a lock or a
//! driver that does not play by the rules gets from the shipped server, over
//! gRPC. A device's clock is bounded by the server's (a report dated too far
//! off is refused and recorded as an alert; one dated ahead buys no time), a
//! lock that opens on a spent nonce or on no authorization raises an alert,
//! and a refused driver learns the reason and nothing of the grant.

mod common;

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use threshold_access_service::Clock;
use threshold_api::v1::{DeviceEventReply, DeviceEventRequest};
use threshold_auth::Role;
use threshold_domain::home::DEVICE_CLOCK_SKEW;
use threshold_domain::{DomainEvent, country::window_bounds, pb};
use tonic::Code;

type H = pb::home_event::Event;

/// The kinds of the alerts on home-1's stream, in order.
async fn alerts(s: &Running) -> Vec<pb::AlertKind> {
    s.log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.decode().expect("decode") {
            DomainEvent::Home(H::AlertRaised(a)) => pb::AlertKind::try_from(a.kind).ok(),
            _ => None,
        })
        .collect()
}

async fn send(
    s: &mut Running,
    r: impl tonic::IntoRequest<DeviceEventRequest>,
) -> Result<DeviceEventReply, tonic::Status> {
    s.vendor
        .record_device_event(r)
        .await
        .map(|r| r.into_inner())
}

fn heartbeat() -> H {
    H::CameraOnline(pb::CameraOnline {
        camera_id: "cam-1".into(),
        recording: true,
    })
}

fn unlocked(grant: &str, nonce: &str) -> H {
    H::Unlocked(pb::LockUnlocked {
        lock_id: "lock-1".into(),
        grant_id: grant.into(),
        nonce: nonce.into(),
    })
}

fn relocked() -> H {
    H::Relocked(pb::LockRelocked {
        lock_id: "lock-1".into(),
    })
}

/// A nonce for g-1 authorized for drv-1 and redeemed by the lock.
async fn redeemed(s: &mut Running) -> String {
    let yes = ask(s, unlock("g-1", "drv-1")).await;
    assert!(yes.authorized, "{}", yes.detail);
    let open = s
        .vendor
        .redeem_unlock(redeem_under("g-1", &yes.nonce))
        .await
        .expect("redeem")
        .into_inner();
    assert!(open.open, "{}", open.detail);
    yes.nonce
}

#[tokio::test]
async fn a_device_report_dated_beyond_the_skew_is_refused_and_recorded_as_an_alert() {
    let mut s = serve_at_the_door().await;
    let before = home_types(&s).await;
    let off = DEVICE_CLOCK_SKEW + Duration::seconds(30);
    for at in [Utc::now() + off, Utc::now() - off] {
        let refused = send(&mut s, device(heartbeat(), at, &key()))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        assert!(
            refused.message().starts_with("occurred_at"),
            "{}",
            refused.message()
        );
    }
    // The heartbeats were not stored; the refusal was, once.
    let after = home_types(&s).await;
    assert_eq!(after.len(), before.len() + 1, "{after:?}");
    assert_eq!(alerts(&s).await, [pb::AlertKind::DeviceClockSkew]);
    // Within the skew, either way, a report is taken.
    let within = DEVICE_CLOCK_SKEW - Duration::seconds(10);
    for at in [Utc::now() + within, Utc::now() - within] {
        send(&mut s, device(heartbeat(), at, &key()))
            .await
            .expect("within the skew");
    }
    // An unsigned report dated off records nothing at all.
    let mut unsigned = device(heartbeat(), Utc::now() + off, &key());
    unsigned.signature.clear();
    let refused = send(&mut s, unsigned).await.expect_err("unsigned");
    assert_eq!(refused.code(), Code::PermissionDenied);
    assert_eq!(alerts(&s).await, [pb::AlertKind::DeviceClockSkew]);
}

#[tokio::test]
async fn a_simulation_bounds_device_time_by_its_own_clock() {
    let mut sim = serve_on(Clock::Simulated).await;
    let t = Utc.with_ymd_and_hms(2026, 3, 29, 8, 10, 0).unwrap();
    door(&mut sim, t, true).await;
    // Dated ten minutes past the simulated time: refused.
    let refused = send(
        &mut sim,
        at(device(heartbeat(), t + Duration::minutes(10), &key()), t),
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(alerts(&sim).await, [pb::AlertKind::DeviceClockSkew]);
    // Dated at the simulated time, but with no simulated time: the
    // simulation's server has no clock to bound it by.
    let refused = send(&mut sim, device(heartbeat(), t, &key()))
        .await
        .expect_err("no time");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
}

#[tokio::test]
async fn a_heartbeat_dated_ahead_does_not_keep_the_camera_gate_open() {
    let mut sim = serve_on(Clock::Simulated).await;
    let utc = |h, m, s| Utc.with_ymd_and_hms(2026, 3, 29, h, m, s).unwrap();
    door(&mut sim, utc(8, 0, 0), true).await;
    // 10:00-13:00 in Stockholm on the spring-forward day: 08:00-11:00 UTC.
    let mut g = grant("g-1");
    g.window_start_local = "2026-03-29T10:00".into();
    g.window_end_local = "2026-03-29T13:00".into();
    sim.resident
        .issue_grant(at(g, utc(6, 0, 0)))
        .await
        .expect("issued");
    // At 08:20 the camera reports a heartbeat dated 110 s ahead.
    let received = utc(8, 20, 0);
    let beat = device(heartbeat(), received + Duration::seconds(110), &key());
    send(&mut sim, at(beat, received))
        .await
        .expect("within the skew");
    // 90 s after the server received it the heartbeat is stale, whatever
    // date the camera put on it.
    let late = ask(
        &mut sim,
        at(unlock("g-1", "drv-1"), received + Duration::seconds(90)),
    )
    .await;
    assert_eq!(
        pb::UnlockDenyReason::try_from(late.reason),
        Ok(pb::UnlockDenyReason::CameraOffline)
    );
    // While it was fresh, the unlock was possible.
    let fresh = ask(
        &mut sim,
        at(unlock("g-1", "drv-1"), received + Duration::seconds(30)),
    )
    .await;
    assert!(fresh.authorized, "{}", fresh.detail);
}

#[tokio::test]
async fn an_unlock_dated_ahead_does_not_put_off_the_relock_alert() {
    let mut s = serve_at_the_door().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let nonce = redeemed(&mut s).await;
    // The lock and the camera date their reports 110 s ahead.
    let t0 = Utc::now();
    let ahead = t0 + Duration::seconds(110);
    send(&mut s, device(heartbeat(), ahead, &key()))
        .await
        .expect("heartbeat");
    let opened = send(&mut s, device(unlocked("g-1", &nonce), ahead, &key()))
        .await
        .expect("unlocked");
    assert_eq!(opened.alerts_raised, [] as [i32; 0]);
    // Seventy seconds after the server received them the camera is silent,
    // and past three minutes the door is overdue: counted from the server's
    // receipt, not from the dates the devices gave.
    assert_eq!(s.access.watch(t0 + Duration::seconds(70)).await.unwrap(), 1);
    assert_eq!(
        s.access.watch(t0 + Duration::seconds(190)).await.unwrap(),
        1
    );
    assert_eq!(
        alerts(&s).await,
        [
            pb::AlertKind::CameraOfflineWhileOpen,
            pb::AlertKind::RelockOverdue
        ]
    );
}

#[tokio::test]
async fn a_second_unlock_on_a_spent_nonce_raises_one_alert_shown_on_the_receipt() {
    let mut s = serve_at_the_door().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    let nonce = redeemed(&mut s).await;
    let first = send(&mut s, device(unlocked("g-1", &nonce), Utc::now(), &key()))
        .await
        .expect("unlocked");
    assert_eq!(first.alerts_raised, [] as [i32; 0]);
    send(&mut s, device(relocked(), Utc::now(), &key()))
        .await
        .expect("relocked");
    // The lock opens again on the same, spent, nonce.
    let replay = device(unlocked("g-1", &nonce), Utc::now(), &key());
    let again = send(&mut s, replay.clone()).await.expect("recorded");
    assert_eq!(again.alerts_raised, [pb::AlertKind::NonceReused as i32]);
    // The same report resent is recognised: no second alert.
    let resent = send(&mut s, replay).await.expect("resent");
    assert!(resent.duplicate);
    assert_eq!(alerts(&s).await, [pb::AlertKind::NonceReused]);
    send(&mut s, device(relocked(), Utc::now(), &key()))
        .await
        .expect("relocked");
    // The resident's receipt for the parcel tells of it.
    let receipt = receipt(&mut s).await;
    assert_eq!(receipt.alerts, [pb::AlertKind::NonceReused as i32]);
}

#[tokio::test]
async fn an_unlock_with_no_authorization_behind_it_raises_an_alert() {
    let mut s = serve_at_the_door().await;
    s.resident.issue_grant(grant("g-1")).await.expect("issue");
    // Under no grant at all.
    let bare = send(&mut s, device(unlocked("", ""), Utc::now(), &key()))
        .await
        .expect("recorded");
    assert_eq!(
        bare.alerts_raised,
        [pb::AlertKind::UnlockWithoutAuthorization as i32]
    );
    send(&mut s, device(relocked(), Utc::now(), &key()))
        .await
        .expect("relocked");
    // Under the grant, on a nonce it authorized but the lock never redeemed.
    let yes = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert!(yes.authorized, "{}", yes.detail);
    let unredeemed = send(
        &mut s,
        device(unlocked("g-1", &yes.nonce), Utc::now(), &key()),
    )
    .await
    .expect("recorded");
    assert_eq!(
        unredeemed.alerts_raised,
        [pb::AlertKind::UnlockWithoutAuthorization as i32]
    );
    // One alert per opening.
    assert_eq!(
        alerts(&s).await,
        [
            pb::AlertKind::UnlockWithoutAuthorization,
            pb::AlertKind::UnlockWithoutAuthorization
        ]
    );
}

#[tokio::test]
async fn a_refused_driver_learns_the_reason_and_nothing_of_the_grant() {
    let mut s = serve_at_the_door().await;
    // g-1's window is open now; g-2's opens in an hour and ends in two.
    let local = |d: Duration| {
        (Utc::now() + d)
            .with_timezone(&threshold_domain::Country::Se.tz())
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let mut later = grant("g-2");
    later.window_start_local = local(Duration::hours(1));
    later.window_end_local = local(Duration::hours(2));
    let mut secrets = vec!["drv-1".to_owned(), "res-1".to_owned(), "home-1".to_owned()];
    for g in [grant("g-1"), later] {
        s.resident.issue_grant(g.clone()).await.expect("issue");
        let issued = grant_history(s.log.as_ref(), &g.grant_id).await;
        let Some(pb::grant_event::Event::Issued(stored)) = issued.first() else {
            panic!("not issued: {issued:?}")
        };
        let (start, end): (DateTime<Utc>, DateTime<Utc>) =
            window_bounds(stored.window.as_ref().expect("window")).expect("bounds");
        secrets.push(g.window_start_local.clone());
        secrets.push(g.window_end_local.clone());
        for t in [start, end] {
            secrets.push(t.to_string());
            secrets.push(t.to_rfc3339());
            secrets.push(t.format("%H:%M").to_string());
            secrets.push(
                t.with_timezone(&threshold_domain::Country::Se.tz())
                    .format("%H:%M")
                    .to_string(),
            );
        }
    }
    // Another driver inside g-1's window; g-2's own driver before its window.
    let mut other = s.client_as(Role::Handheld, "drv-2");
    let wrong = other
        .authorize_unlock(unlock("g-1", "drv-2"))
        .await
        .expect("decided")
        .into_inner();
    let early = ask(&mut s, unlock("g-2", "drv-1")).await;
    for (reply, want) in [
        (&wrong, pb::UnlockDenyReason::WrongDriver),
        (&early, pb::UnlockDenyReason::OutsideWindow),
    ] {
        assert!(!reply.authorized);
        assert_eq!(pb::UnlockDenyReason::try_from(reply.reason), Ok(want));
        assert!(!reply.detail.is_empty());
        let told = format!("{reply:?}");
        for secret in &secrets {
            assert!(!told.contains(secret.as_str()), "{told} names {secret}");
        }
    }
    // The carrier's record keeps what the driver was not told.
    let denied: Vec<String> = grant_history(s.log.as_ref(), "g-1")
        .await
        .into_iter()
        .filter_map(|e| match e {
            pb::grant_event::Event::UnlockDenied(d) => Some(d.detail),
            _ => None,
        })
        .collect();
    assert!(denied.iter().any(|d| d.contains("drv-1")), "{denied:?}");
}
