//! AccessService end to end on 127.0.0.1:0 over the embedded log.

mod common;

use chrono::Utc;
use common::*;
use threshold_access_service::Clock;
use threshold_access_service::device::{Signed, key_from_seed};
use threshold_api::v1::{ClockRequest, RevokeGrantRequest};
use threshold_domain::{DomainEvent, pb};

#[tokio::test]
async fn grants_authorize_inside_their_window_and_refuse_with_a_reason() {
    let mut s = serve_at_the_door().await;
    let issued = issue(&mut s, grant("g-1")).await;
    assert_eq!((issued.version, issued.unchanged), (1, false));
    let again = issue(&mut s, grant("g-1")).await;
    assert!(
        again.unchanged,
        "issuing the same grant twice changes nothing"
    );

    let a = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert!(a.authorized, "{}", a.detail);
    assert!(!a.nonce.is_empty());
    let b = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert_ne!(a.nonce, b.nonce, "every authorization has a fresh nonce");

    // drv-1's handheld cannot speak for drv-2...
    let err = s
        .handheld
        .authorize_unlock(unlock("g-1", "drv-2"))
        .await
        .expect_err("another driver");
    assert_eq!(
        err.code(),
        tonic::Code::PermissionDenied,
        "{}",
        err.message()
    );
    // ...and drv-2's own handheld is refused by the grant, with a reason.
    let wrong = s
        .client_as(threshold_auth::Role::Handheld, "drv-2")
        .authorize_unlock(unlock("g-1", "drv-2"))
        .await
        .expect("decided")
        .into_inner();
    assert!(!wrong.authorized);
    assert_eq!(wrong.reason, pb::UnlockDenyReason::WrongDriver as i32);

    s.resident
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-1".into(),
            by: "res-1".into(),
            reason: "plans changed".into(),
        })
        .await
        .expect("revoke");
    let after = ask(&mut s, unlock("g-1", "drv-1")).await;
    assert!(!after.authorized);
    assert_eq!(after.reason, pb::UnlockDenyReason::Revoked as i32);

    // Every decision, refusals included, is on the grant's stream.
    let types = threshold_testkit::fixtures::event_types(s.log.as_ref(), "grant/g-1").await;
    assert_eq!(
        types,
        vec![
            "grant.issued",
            "grant.unlock_authorized",
            "grant.unlock_authorized",
            "grant.unlock_denied",
            "grant.revoked",
            "grant.unlock_denied"
        ]
    );

    let missing = s
        .handheld
        .authorize_unlock(unlock("g-404", "drv-1"))
        .await
        .expect_err("no grant");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let mut bad = grant("g-2");
    bad.window_end_local = "tomorrow".into();
    let err = s.resident.issue_grant(bad).await.expect_err("bad window");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("window_end_local"),
        "{}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_racing_many_unlocks_is_never_overtaken() {
    let mut s = serve_at_the_door().await;
    s.resident
        .issue_grant(grant("g-race"))
        .await
        .expect("issue");
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let mut c = s.handheld.clone();
        tasks.push(tokio::spawn(async move {
            c.authorize_unlock(unlock("g-race", "drv-1"))
                .await
                .map(|r| r.into_inner())
        }));
    }
    let revoked = s
        .resident
        .revoke_grant(RevokeGrantRequest {
            grant_id: "g-race".into(),
            by: "res-1".into(),
            reason: "race".into(),
        })
        .await;
    assert!(revoked.is_ok(), "{revoked:?}");
    let mut authorized = 0;
    for t in tasks {
        authorized += usize::from(
            t.await
                .expect("task")
                .expect("every unlock is decided")
                .authorized,
        );
    }
    // After the revoke was acknowledged, nothing is authorized.
    for _ in 0..5 {
        let r = ask(&mut s, unlock("g-race", "drv-1")).await;
        assert_eq!(r.reason, pb::UnlockDenyReason::Revoked as i32);
    }
    // And in the grant's one order of events, no authorization follows the revoke.
    let events = s
        .log
        .read_stream(&"grant/g-race".parse().expect("stream"), 0, 1000)
        .await
        .expect("read");
    let revoked_at = events
        .iter()
        .position(|r| r.event.event_type == "grant.revoked")
        .expect("revoked");
    assert!(
        events[revoked_at..]
            .iter()
            .all(|r| r.event.event_type != "grant.unlock_authorized")
    );
    // Issued, revoked, every authorization, and the refusals (each of
    // them "revoked", to the same driver) up to the grant's bound.
    let refused = 30 - authorized + 5;
    let most = threshold_domain::grant::MAX_RECORDED_PER_REASON as usize;
    assert_eq!(events.len(), 1 + 1 + authorized + refused.min(most));
}

#[tokio::test]
async fn device_events_are_recorded_once_for_registered_homes() {
    let mut s = serve().await;
    let mut register = device(registration("home-1", Some(address())), Utc::now(), &key());
    // Set by the server as it stores the event; a client's is ignored.
    register.event.as_mut().expect("event").prev_hash = vec![1; 32];
    register.sign(&key());
    let first = s
        .vendor
        .record_device_event(register.clone())
        .await
        .expect("register")
        .into_inner();
    assert!(!first.duplicate);
    assert_eq!(first.claim_code.len(), 19, "{first:?}");
    let resent = s
        .vendor
        .record_device_event(register)
        .await
        .expect("resend")
        .into_inner();
    assert_eq!((resent.duplicate, resent.position), (true, first.position));
    // A resend is not a new registration: no code again.
    assert!(resent.claim_code.is_empty());

    let camera = |home: &str| {
        let mut r = device(
            pb::home_event::Event::CameraOnline(pb::CameraOnline {
                camera_id: "cam-1".into(),
                recording: true,
            }),
            Utc::now(),
            &key(),
        );
        r.home_id = home.into();
        r.sign(&key());
        r
    };
    s.vendor
        .record_device_event(camera("home-1"))
        .await
        .expect("camera");
    let err = s
        .vendor
        .record_device_event(camera("home-404"))
        .await
        .expect_err("unregistered");
    assert_eq!(err.code(), tonic::Code::NotFound, "{}", err.message());
    // Unsigned, or signed by another key: refused, and nothing stored.
    let mut unsigned = camera("home-1");
    unsigned.signature.clear();
    let forged = {
        let mut r = camera("home-1");
        r.sign(&key_from_seed([9; 32]));
        r
    };
    for bad in [unsigned, forged] {
        let err = s
            .vendor
            .record_device_event(bad)
            .await
            .expect_err("bad signature");
        assert_eq!(
            err.code(),
            tonic::Code::PermissionDenied,
            "{}",
            err.message()
        );
        assert!(err.message().starts_with("signature:"), "{}", err.message());
    }
    let stored = s
        .log
        .read_stream(&"home/home-1".parse().expect("stream"), 0, 10)
        .await
        .expect("read");
    assert_eq!(stored.len(), 2);
    // The address is kept sealed under the household's key, the code as a
    // digest only.
    match stored[0].decode().expect("decode") {
        DomainEvent::Home(pb::home_event::Event::LockRegistered(r)) => {
            assert!(r.address.is_none());
            let sealed = r.sealed_address.expect("sealed");
            assert_eq!(sealed.subject, r.household_id);
            assert_eq!(r.claim_digest.len(), 32);
        }
        other => panic!("{other:?}"),
    }
    assert!(!String::from_utf8_lossy(&stored[0].event.payload).contains("Storgatan"));
    assert!(
        !String::from_utf8_lossy(&stored[0].event.payload)
            .contains(&first.claim_code.replace('-', ""))
    );
    assert!(matches!(
        stored[1].decode().expect("decode"),
        DomainEvent::Home(pb::home_event::Event::CameraOnline(_))
    ));
    // The home's events form an intact audit chain ending at the last one.
    let head = threshold_log::audit::verify(&stored).expect("intact chain");
    assert_eq!(head, threshold_log::audit::hash_of(&stored[1]));
}

#[tokio::test]
async fn a_simulation_decides_windows_on_its_own_clock_and_a_real_server_refuses_it() {
    use chrono::TimeZone;
    let mut sim = serve_on(Clock::Simulated).await;
    let clock = sim.handheld.clock(ClockRequest {}).await.expect("clock");
    assert!(clock.into_inner().simulated);
    // A window on a day far from today: 10:00-13:00 in Stockholm, 2026-03-29
    // (the spring-forward day: 08:00-11:00 UTC).
    let mut g = grant("g-sim");
    g.window_start_local = "2026-03-29T10:00".into();
    g.window_end_local = "2026-03-29T13:00".into();
    let utc = |h, m| Utc.with_ymd_and_hms(2026, 3, 29, h, m, 0).unwrap();
    door(&mut sim, utc(7, 59), true).await;
    let refused = sim
        .resident
        .issue_grant(g.clone())
        .await
        .expect_err("no time");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    sim.resident
        .issue_grant(at(g.clone(), utc(6, 0)))
        .await
        .expect("issued");

    let early = ask(&mut sim, at(unlock("g-sim", "drv-1"), utc(7, 59))).await;
    assert!(!early.authorized);
    assert_eq!(early.reason, pb::UnlockDenyReason::OutsideWindow as i32);
    let inside = ask(&mut sim, at(unlock("g-sim", "drv-1"), utc(8, 0))).await;
    assert!(inside.authorized, "{}", inside.detail);
    let until = threshold_domain::country::instant(&inside.valid_until.expect("until")).unwrap();
    assert_eq!(
        until,
        utc(8, 2),
        "valid for two minutes of the simulated clock"
    );
    let late = ask(&mut sim, at(unlock("g-sim", "drv-1"), utc(11, 0))).await;
    assert_eq!(late.reason, pb::UnlockDenyReason::Expired as i32);
    let bad = sim
        .handheld
        .authorize_unlock({
            let mut r = tonic::Request::new(unlock("g-sim", "drv-1"));
            r.metadata_mut().insert(
                threshold_api::SIMULATED_TIME_HEADER,
                "noon".parse().unwrap(),
            );
            r
        })
        .await
        .expect_err("bad time");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("noon"), "{}", bad.message());

    // A server on its own clock never takes a client's time.
    let mut real = serve().await;
    let clock = real
        .handheld
        .clock(ClockRequest {})
        .await
        .expect("clock")
        .into_inner();
    assert!(!clock.simulated);
    let now = threshold_domain::country::instant(&clock.now.expect("now")).unwrap();
    assert!(
        (Utc::now() - now).num_seconds().abs() < 60,
        "the server's own time"
    );
    door(&mut real, Utc::now(), false).await;
    real.resident
        .issue_grant(grant("g-real"))
        .await
        .expect("issued");
    let skewed = real
        .handheld
        .authorize_unlock(at(unlock("g-real", "drv-1"), Utc::now()))
        .await
        .expect_err("refused");
    assert_eq!(skewed.code(), tonic::Code::FailedPrecondition);
}

/// The log as it was just before a grant was issued, for the first read
/// of that grant's stream only: the read an unlock's checks are made on.
struct IssuedJustAfterTheFirstRead {
    log: std::sync::Arc<dyn threshold_log::EventLog>,
    stream: threshold_domain::ids::StreamId,
    read: std::sync::atomic::AtomicBool,
}

impl IssuedJustAfterTheFirstRead {
    fn blind(&self, stream: &threshold_domain::ids::StreamId) -> bool {
        *stream == self.stream && !self.read.swap(true, std::sync::atomic::Ordering::SeqCst)
    }
}

#[tonic::async_trait]
impl threshold_log::EventLog for IssuedJustAfterTheFirstRead {
    async fn append(
        &self,
        stream: &threshold_domain::ids::StreamId,
        expected: threshold_log::ExpectedVersion,
        events: Vec<threshold_log::NewEvent>,
    ) -> threshold_log::Result<threshold_log::AppendOutcome> {
        self.log.append(stream, expected, events).await
    }
    async fn read_stream(
        &self,
        stream: &threshold_domain::ids::StreamId,
        after: u64,
        max: usize,
    ) -> threshold_log::Result<Vec<threshold_log::RecordedEvent>> {
        if self.blind(stream) {
            return Ok(Vec::new());
        }
        self.log.read_stream(stream, after, max).await
    }
    async fn read_all(
        &self,
        after: threshold_log::Position,
        max: usize,
    ) -> threshold_log::Result<Vec<threshold_log::RecordedEvent>> {
        self.log.read_all(after, max).await
    }
    async fn head(&self) -> threshold_log::Result<threshold_log::Position> {
        self.log.head().await
    }
    fn subscribe(&self, after: threshold_log::Position) -> threshold_log::Subscription {
        self.log.subscribe(after)
    }
}

/// A grant issued between an unlock's first read of it and its decision:
/// the checks around the grant (route, scan, geofence, camera) were made
/// on no grant at all, so the unlock is not decided on the one issued
/// meanwhile. Here the driver stands 10 km from the door.
#[tokio::test]
async fn an_unlock_asked_as_its_grant_is_issued_skips_none_of_the_checks() {
    use threshold_api::v1::access_service_server::AccessService as _;
    let mut s = serve_at_the_door().await;
    issue(&mut s, grant("g-1")).await;
    let mut far = unlock("g-1", "drv-1");
    far.position = Some(pb::GeoPoint {
        latitude: 59.42,
        longitude: 18.06,
    });
    // On the log as it is: refused for where the driver stands.
    let refused = ask(&mut s, far.clone()).await;
    assert!(!refused.authorized);
    assert_eq!(refused.reason, pb::UnlockDenyReason::OutsideGeofence as i32);
    // On a log whose first read of the grant comes just before its issue.
    let access =
        threshold_access_service::Access::new(std::sync::Arc::new(IssuedJustAfterTheFirstRead {
            log: s.log.clone(),
            stream: threshold_domain::ids::StreamId::grant(
                &threshold_domain::GrantId::new("g-1").expect("an id"),
            ),
            read: Default::default(),
        }))
        .with_vault(s.vault.clone());
    let mut request = tonic::Request::new(far);
    request.extensions_mut().insert(threshold_auth::Principal {
        name: "drv-1".into(),
        role: threshold_auth::Role::Handheld,
        tenant: "drv-1".into(),
    });
    match access.authorize_unlock(request).await {
        Ok(reply) => assert!(!reply.get_ref().authorized, "{:?}", reply.get_ref()),
        Err(e) => assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}"),
    }
    // And nothing was authorized under the grant.
    let authorized = grant_history(s.log.as_ref(), "g-1")
        .await
        .iter()
        .filter(|e| matches!(e, pb::grant_event::Event::UnlockAuthorized(_)))
        .count();
    assert_eq!(authorized, 0);
}

/// A grant opens a door for a delivery: a window over a week long, or
/// starting over 30 days ahead, is refused naming it, and nothing is
/// issued (every grant is watched until its window ends).
#[tokio::test]
async fn a_grants_window_is_at_most_a_week_and_starts_within_a_month() {
    let mut s = serve_at_the_door().await;
    let local = |d: chrono::Duration| {
        (Utc::now() + d)
            .with_timezone(&threshold_domain::Country::Se.tz())
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    let mut long = grant("g-long");
    long.window_end_local = local(chrono::Duration::days(8));
    let mut far = grant("g-far");
    far.window_start_local = local(chrono::Duration::days(31));
    far.window_end_local = local(chrono::Duration::days(31) + chrono::Duration::hours(2));
    for (g, field) in [(long, "window"), (far, "window_start_local")] {
        let id = g.grant_id.clone();
        let err = s.resident.issue_grant(g).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{id}: {err:?}");
        assert!(err.message().contains(field), "{id}: {err:?}");
        assert_eq!(grant_history(s.log.as_ref(), &id).await, []);
    }
    // A week less a minute, starting within the month: issued.
    let mut week = grant("g-week");
    week.window_start_local = local(chrono::Duration::days(20));
    week.window_end_local = local(chrono::Duration::days(27) - chrono::Duration::minutes(1));
    s.resident.issue_grant(week).await.expect("a week's window");
}
