//! HandheldService end to end: a real server on 127.0.0.1:0 over the
//! embedded log, handhelds as real gRPC clients.

use chrono::{NaiveDate, Utc};
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::{
    AttemptAck, AttemptFailedReport, DeliveredReport, HandheldEvent, attempt_ack,
};
use threshold_auth::{Authed, Credentials, Role};
use threshold_domain::country::date_to_proto;
use threshold_domain::{DomainEvent, EventId, StreamId, pb};
use threshold_log::{EventLog, ExpectedVersion, NewEvent, Position};
use threshold_testkit::fixtures::{
    HandheldStream, delivered, event_types, handheld_event, manifested, not_home, parcel_history,
    planned, started,
};
use threshold_testkit::{Sandbox, Service};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A connection of its own as the handheld role (every driver).
async fn channel(server: &Sandbox) -> Authed {
    as_role(server, Role::Handheld).await
}

async fn as_role(server: &Sandbox, role: Role) -> Authed {
    server
        .tokens()
        .channel(server.connect().await, role)
        .expect("token")
}

/// The production server running the handheld service only.
async fn serve() -> Sandbox {
    serve_with(threshold_handheld_service::Limits::default()).await
}

async fn serve_with(limits: threshold_handheld_service::Limits) -> Sandbox {
    Sandbox::builder()
        .services([Service::Attempts])
        .handheld_limits(limits)
        .start()
        .await
}

/// Parcels manifested on drv-7's route STO-1-r1: what [`event`] reports on.
async fn on_route(server: &Sandbox, parcels: &[&str]) {
    manifested(server.log().as_ref(), parcels).await;
    planned(server.log().as_ref(), "STO-1-r1", "drv-7", parcels).await;
}

/// Driver drv-7's handheld hh-7 on route STO-1-r1 reports `report` about
/// `parcel`, its `seq`th event.
fn event(seq: u64, parcel: &str, report: Report) -> HandheldEvent {
    HandheldEvent {
        device_id: "hh-7".into(),
        sequence: seq,
        driver_id: "drv-7".into(),
        route_id: "STO-1-r1".into(),
        ..handheld_event(parcel, report)
    }
}

fn result(a: &AttemptAck) -> attempt_ack::Result {
    attempt_ack::Result::try_from(a.result).expect("result")
}

#[tokio::test]
async fn each_event_is_acknowledged_once_durable_with_its_attempt_number() {
    let server = serve().await;
    on_route(&server, &["SE-1", "SE-2", "SE-3"]).await;
    let mut hh = HandheldStream::open(channel(&server).await).await;

    let a = hh.send(&event(1, "SE-1", started())).await;
    assert_eq!(
        (result(&a), a.sequence, a.attempt),
        (attempt_ack::Result::Stored, 1, 1)
    );
    let a = hh.send(&event(2, "SE-1", delivered())).await;
    assert_eq!((result(&a), a.attempt), (attempt_ack::Result::Stored, 1));
    // Not home twice, then delivered: three attempts.
    for (seq, report, attempt) in [(3, not_home(), 1), (4, not_home(), 2), (5, delivered(), 3)] {
        let a = hh.send(&event(seq, "SE-2", report)).await;
        assert_eq!(
            (result(&a), a.attempt),
            (attempt_ack::Result::Stored, attempt),
            "seq {seq}"
        );
    }
    // Acknowledged means durable: it is in the log now.
    let head = server.log().head().await.expect("head");
    assert!(head.0 >= a.position);
    let se2 = server
        .log()
        .read_stream(&"parcel/SE-2".parse().expect("stream"), 0, 100)
        .await
        .expect("read");
    let types: Vec<&str> = se2.iter().map(|r| r.event.event_type.as_str()).collect();
    assert_eq!(
        types,
        vec![
            "parcel.manifested",
            "parcel.attempt_started",
            "parcel.attempt_failed",
            "parcel.attempt_started",
            "parcel.attempt_failed",
            "parcel.attempt_started",
            "parcel.delivered"
        ]
    );
    assert_eq!(se2[2].event.tenant.as_deref(), Some("nordshop"));
}

#[tokio::test]
async fn a_handheld_that_drops_offline_resends_and_nothing_is_stored_twice() {
    let server = serve().await;
    let parcels: Vec<String> = (0..10).map(|n| format!("SE-{n}")).collect();
    on_route(
        &server,
        &parcels.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let backlog: Vec<HandheldEvent> = parcels
        .iter()
        .enumerate()
        .map(|(i, p)| {
            event(
                i as u64 + 1,
                p,
                if i % 3 == 0 { not_home() } else { delivered() },
            )
        })
        .collect();

    // Online for the first six, then the connection drops.
    let mut hh = HandheldStream::open(channel(&server).await).await;
    let mut first = Vec::new();
    for e in &backlog[..6] {
        first.push(hh.send(e).await);
    }
    drop(hh);
    let head_before = server.log().head().await.expect("head");

    // Back online: the handheld resends everything it has, acked or not.
    let mut hh = HandheldStream::open(channel(&server).await).await;
    let mut second = Vec::new();
    for e in &backlog {
        second.push(hh.send(e).await);
    }
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert_eq!(result(b), attempt_ack::Result::Duplicate, "event {i}");
        assert_eq!(
            (b.position, b.attempt),
            (a.position, a.attempt),
            "the original's place"
        );
    }
    for b in &second[6..] {
        assert_eq!(result(b), attempt_ack::Result::Stored);
    }
    // Every event once: one started + one outcome per parcel, plus
    // manifests and the route's plan.
    let all = server
        .log()
        .read_all(Position::ORIGIN, 1000)
        .await
        .expect("read");
    assert_eq!(all.len(), 10 + 1 + 20);
    assert!(head_before.0 < all.len() as u64);
    let ids: std::collections::HashSet<_> = all.iter().map(|r| r.event.event_id).collect();
    assert_eq!(ids.len(), all.len());
}

#[tokio::test]
async fn bad_events_are_rejected_with_the_field_named_and_the_stream_goes_on() {
    let server = serve().await;
    manifested(server.log().as_ref(), &["SE-1"]).await;
    // SE-404 is planned but was never manifested.
    planned(
        server.log().as_ref(),
        "STO-1-r1",
        "drv-7",
        &["SE-1", "SE-404"],
    )
    .await;
    let mut hh = HandheldStream::open(channel(&server).await).await;

    let mut bad = event(1, "SE-1", started());
    bad.event_id = "not-a-uuid".into();
    let a = hh.send(&bad).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert_eq!(a.code, tonic::Code::InvalidArgument as i32);
    assert!(a.error.starts_with("event_id:"), "{}", a.error);

    let mut no_reason = event(2, "SE-1", not_home());
    no_reason.report = Some(Report::Failed(AttemptFailedReport {
        reason: 0,
        note: String::new(),
    }));
    let a = hh.send(&no_reason).await;
    assert!(a.error.starts_with("failed.reason:"), "{}", a.error);

    let a = hh.send(&event(3, "SE-404", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert_eq!(a.code, tonic::Code::NotFound as i32);
    assert!(
        a.error.contains("parcel/SE-404 is not manifested"),
        "{}",
        a.error
    );

    // A good event after the bad ones is stored.
    let a = hh.send(&event(4, "SE-1", delivered())).await;
    assert_eq!((result(&a), a.code), (attempt_ack::Result::Stored, 0));
    // A second delivery of a delivered parcel (a new event, not a resend) is refused.
    let a = hh.send(&event(5, "SE-1", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert_eq!(a.code, tonic::Code::FailedPrecondition as i32);
    assert!(
        a.error.contains("cannot deliver when delivered"),
        "{}",
        a.error
    );
}

#[tokio::test]
async fn an_oversized_event_gets_resource_exhausted() {
    let server = serve().await;
    on_route(&server, &["SE-1"]).await;
    let mut hh = HandheldStream::open(channel(&server).await).await;
    let mut huge = event(1, "SE-1", not_home());
    huge.report = Some(Report::Failed(AttemptFailedReport {
        reason: pb::FailureReason::NotHome as i32,
        note: "x".repeat(threshold_handheld_service::MAX_MESSAGE + 1),
    }));
    hh.tx.send(huge).await.expect("send");
    let err = hh.acks.message().await.expect_err("refused");
    assert_eq!(
        err.code(),
        tonic::Code::ResourceExhausted,
        "{}",
        err.message()
    );
    // Nothing was stored (the manifest and the plan are all there is), and
    // the server serves the next stream as usual.
    assert_eq!(server.log().head().await.expect("head"), Position(2));
    let mut hh = HandheldStream::open(channel(&server).await).await;
    assert_eq!(
        result(&hh.send(&event(2, "SE-1", delivered())).await),
        attempt_ack::Result::Stored
    );
}

#[tokio::test]
async fn a_flood_on_one_stream_gets_resource_exhausted_and_others_carry_on() {
    let server = serve_with(threshold_handheld_service::Limits {
        events_per_second: 5.0,
        burst: 10.0,
        ..Default::default()
    })
    .await;
    let parcels: Vec<String> = (0..40).map(|n| format!("SE-{n}")).collect();
    on_route(
        &server,
        &parcels.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    let (tx, rx) = mpsc::channel(64);
    for (i, p) in parcels.iter().enumerate() {
        tx.send(event(i as u64 + 1, p, delivered()))
            .await
            .expect("queue");
    }
    drop(tx);
    let mut acks = HandheldServiceClient::new(channel(&server).await)
        .stream_attempts(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut stored = 0;
    let err = loop {
        match acks.message().await {
            Ok(Some(a)) => {
                assert_eq!(result(&a), attempt_ack::Result::Stored);
                stored += 1;
            }
            Ok(None) => panic!("the flood was not stopped"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(err.message().contains("events/s"), "{}", err.message());
    assert!(
        (10..40).contains(&stored),
        "the burst went through, the flood did not: {stored}"
    );
    // Another handheld is not affected.
    let mut other = HandheldStream::open(channel(&server).await).await;
    let a = other.send(&event(99, "SE-39", delivered())).await;
    assert_ne!(result(&a), attempt_ack::Result::Rejected, "{}", a.error);
}

#[tokio::test]
async fn a_parcel_changed_by_another_writer_is_decided_from_the_log_not_a_stale_memory() {
    let server = serve().await;
    on_route(&server, &["SE-1"]).await;
    let mut hh = HandheldStream::open(channel(&server).await).await;
    let a = hh.send(&event(1, "SE-1", not_home())).await;
    assert_eq!((result(&a), a.attempt), (attempt_ack::Result::Stored, 1));

    // Another writer records attempt 2 behind the service's back.
    let stream: StreamId = "parcel/SE-1".parse().expect("stream");
    let version = server
        .log()
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
        .len() as u64;
    let mut state = threshold_domain::parcel::Parcel::default();
    for r in server
        .log()
        .read_stream(&stream, 0, 100)
        .await
        .expect("read")
    {
        if let DomainEvent::Parcel(p) = r.decode().expect("decode") {
            threshold_domain::Aggregate::evolve(&mut state, &p);
        }
    }
    let events = threshold_domain::Aggregate::decide(
        &state,
        &threshold_domain::parcel::Command::FailAttempt {
            reason: pb::FailureReason::NoAccess,
            driver_id: threshold_domain::DriverId::new("drv-9").expect("id"),
            device_id: threshold_domain::DeviceId::new("hh-9").expect("id"),
            note: String::new(),
        },
    )
    .expect("decide");
    let new = events
        .iter()
        .map(|e| NewEvent::new(EventId::new(), &DomainEvent::Parcel(e.clone()), Utc::now()))
        .collect();
    server
        .log()
        .append(&stream, ExpectedVersion::Exactly(version), new)
        .await
        .expect("the other writer");

    // The handheld's next failure is attempt 3, not a second "attempt 2".
    let a = hh.send(&event(2, "SE-1", not_home())).await;
    assert_eq!((result(&a), a.attempt), (attempt_ack::Result::Stored, 3));
    let attempts: Vec<u32> = parcel_history(server.log().as_ref(), "SE-1")
        .await
        .into_iter()
        .filter_map(|e| match e {
            pb::parcel_event::Event::AttemptStarted(s) => Some(s.attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3]);
}

#[tokio::test]
async fn a_driver_gets_the_latest_plan_of_its_route_for_the_day() {
    use threshold_api::v1::GetRouteRequest;
    use threshold_domain::route::{Command as Plan, Route};

    let server = serve().await;
    let day = NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    let stop = |index: u32, parcel: &str| pb::PlannedStop {
        index,
        parcel_ids: vec![parcel.into()],
        position: Some(pb::GeoPoint {
            latitude: 59.33,
            longitude: 18.06,
        }),
        planned_arrival: None,
        planned_departure: None,
        sealed_position: None,
    };
    let plan = |stops: Vec<pb::PlannedStop>| Plan::Plan {
        route_id: threshold_domain::RouteId::new("STO-1-2026-11-23-v1").expect("id"),
        depot_id: threshold_domain::DepotId::new("STO-1").expect("id"),
        local_date: day,
        vehicle_id: threshold_domain::VehicleId::new("van-1").expect("id"),
        driver_id: threshold_domain::DriverId::new("drv-7").expect("id"),
        stops,
        reason: "parcels added".into(),
    };
    let stream: StreamId = "route/STO-1-2026-11-23-v1".parse().expect("stream");
    let mut route = Route::default();
    for (version, command) in [
        (0, plan(vec![stop(0, "SE-1")])),
        (1, plan(vec![stop(0, "SE-1"), stop(1, "SE-2")])),
    ] {
        let events = threshold_domain::Aggregate::decide(&route, &command).expect("decide");
        let new = events
            .iter()
            .map(|e| NewEvent::new(EventId::new(), &DomainEvent::Route(e.clone()), Utc::now()))
            .collect();
        server
            .log()
            .append(&stream, ExpectedVersion::Exactly(version), new)
            .await
            .expect("append");
        for e in &events {
            threshold_domain::Aggregate::evolve(&mut route, e);
        }
    }

    let channel = channel(&server).await;
    let mut client = HandheldServiceClient::new(channel);
    let ask = |driver: &str, day: NaiveDate| GetRouteRequest {
        driver_id: driver.into(),
        date: Some(date_to_proto(day)),
    };
    let got = client
        .get_route(ask("drv-7", day))
        .await
        .expect("route")
        .into_inner();
    assert_eq!(got.routes.len(), 1);
    let r = &got.routes[0];
    assert_eq!(
        (r.route_id.as_str(), r.plan_version, r.stops.len()),
        ("STO-1-2026-11-23-v1", 2, 2)
    );
    assert_eq!(r.stops[1].parcel_ids, vec!["SE-2".to_owned()]);
    assert!(
        client
            .get_route(ask("drv-8", day))
            .await
            .expect("route")
            .into_inner()
            .routes
            .is_empty()
    );
    let next = day.succ_opt().expect("date");
    assert!(
        client
            .get_route(ask("drv-7", next))
            .await
            .expect("route")
            .into_inner()
            .routes
            .is_empty()
    );
    let bad = client
        .get_route(GetRouteRequest {
            driver_id: "drv 7".into(),
            date: None,
        })
        .await
        .expect_err("bad id");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

/// Appends `events` to `stream` as they are, now: what the access service
/// and the home's lock would have recorded.
async fn facts(log: &dyn EventLog, stream: &str, events: Vec<DomainEvent>) {
    threshold_testkit::fixtures::facts(log, stream, events, Utc::now()).await;
}

#[tokio::test]
async fn an_in_home_delivery_closes_only_after_the_lock_reports_the_relock() {
    let server = serve().await;
    on_route(&server, &["SE-1"]).await;
    let mut hh = HandheldStream::open(channel(&server).await).await;
    let in_home = || {
        Report::Delivered(DeliveredReport {
            method: pb::DeliveryMethod::InHome as i32,
            grant_id: "g-1".into(),
            position: None,
        })
    };
    assert_eq!(
        result(&hh.send(&event(1, "SE-1", started())).await),
        attempt_ack::Result::Stored
    );
    // No grant at all.
    let a = hh.send(&event(2, "SE-1", in_home())).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert!(a.error.contains("never issued"), "{}", a.error);
    let grant = |e| DomainEvent::Grant(e);
    facts(
        server.log().as_ref(),
        "grant/g-1",
        vec![grant(pb::grant_event::Event::Issued(pb::GrantIssued {
            grant_id: "g-1".into(),
            home_id: "home-1".into(),
            parcel_ids: vec!["SE-1".into()],
            ..Default::default()
        }))],
    )
    .await;
    // Issued, but the lock never redeemed an authorization for SE-1.
    let a = hh.send(&event(3, "SE-1", in_home())).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert!(a.error.contains("no unlock was redeemed"), "{}", a.error);
    facts(
        server.log().as_ref(),
        "grant/g-1",
        vec![
            grant(pb::grant_event::Event::UnlockAuthorized(
                pb::UnlockAuthorized {
                    parcel_id: "SE-1".into(),
                    driver_id: "drv-7".into(),
                    nonce: "n-1".into(),
                    valid_until: None,
                },
            )),
            grant(pb::grant_event::Event::Used(pb::GrantUsed {
                parcel_id: "SE-1".into(),
                nonce: "n-1".into(),
                lock_id: "lock-1".into(),
            })),
        ],
    )
    .await;
    let home = |e| DomainEvent::Home(e);
    facts(
        server.log().as_ref(),
        "home/home-1",
        vec![home(pb::home_event::Event::Unlocked(pb::LockUnlocked {
            lock_id: "lock-1".into(),
            grant_id: "g-1".into(),
            nonce: "n-1".into(),
        }))],
    )
    .await;
    // The door is open: not yet.
    let a = hh.send(&event(4, "SE-1", in_home())).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert!(a.error.contains("relocked"), "{}", a.error);
    facts(
        server.log().as_ref(),
        "home/home-1",
        vec![home(pb::home_event::Event::Relocked(pb::LockRelocked {
            lock_id: "lock-1".into(),
        }))],
    )
    .await;
    let a = hh.send(&event(5, "SE-1", in_home())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{}", a.error);
}

#[tokio::test]
async fn a_handheld_reports_for_its_own_driver_and_a_caller_without_credentials_for_nobody() {
    let server = serve().await;
    manifested(server.log().as_ref(), &["SE-1"]).await;
    planned(server.log().as_ref(), "STO-1-r1", "drv-1", &["SE-1"]).await;
    // A handheld credential for drv-1 only.
    let token =
        Credentials::add(server.data(), "hh-1", Role::Handheld, "drv-1").expect("credential");
    let plain = server.connect().await;
    let mut hh =
        HandheldStream::open(threshold_auth::authed(plain.clone(), Some(&token)).expect("token"))
            .await;
    // `event` reports for drv-7.
    let a = hh.send(&event(1, "SE-1", started())).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected);
    assert_eq!(a.code, tonic::Code::PermissionDenied as i32);
    assert!(a.error.contains("drv-7"), "{}", a.error);
    let mut own = event(2, "SE-1", started());
    own.driver_id = "drv-1".into();
    assert_eq!(result(&hh.send(&own).await), attempt_ack::Result::Stored);
    // An analyst's token does not open a handheld stream; no token, nothing.
    for channel in [
        as_role(&server, Role::Analyst).await,
        threshold_auth::authed(plain, None).expect("channel"),
    ] {
        let err = HandheldServiceClient::new(channel)
            .get_route(threshold_api::v1::GetRouteRequest {
                driver_id: "drv-1".into(),
                date: Some(date_to_proto(
                    NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
                )),
            })
            .await
            .expect_err("refused");
        assert!(
            matches!(
                err.code(),
                tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
            ),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn where_a_parcel_was_delivered_is_sealed_under_its_households_key() {
    let server = serve().await;
    // A parcel whose address the manifest service sealed.
    let household = server
        .vault()
        .household(&["Gatan 1", "111 51", "Stockholm", "SE"])
        .expect("household");
    let address = pb::Address {
        street: "Gatan 1".into(),
        ..Default::default()
    };
    let m = pb::ParcelManifested {
        parcel_id: "SE-9".into(),
        partner_id: "nordshop".into(),
        country: pb::Country::Se as i32,
        depot_id: "STO-1".into(),
        delivery_date: Some(date_to_proto(
            NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
        )),
        service: pb::Service::Doorstep as i32,
        weight_grams: 1000,
        sealed_address: Some(
            server
                .vault()
                .seal_message(&household.subject, "parcel/SE-9", &address)
                .expect("seal"),
        ),
        ..Default::default()
    };
    facts(
        server.log().as_ref(),
        "parcel/SE-9",
        vec![DomainEvent::Parcel(pb::parcel_event::Event::Manifested(m))],
    )
    .await;
    planned(server.log().as_ref(), "STO-1-r1", "drv-7", &["SE-9"]).await;
    let mut hh = HandheldStream::open(channel(&server).await).await;
    let at = pb::GeoPoint {
        latitude: 59.3301,
        longitude: 18.0601,
    };
    let mut delivered = event(1, "SE-9", delivered());
    if let Some(Report::Delivered(d)) = &mut delivered.report {
        d.position = Some(at);
    }
    assert_eq!(
        result(&hh.send(&delivered).await),
        attempt_ack::Result::Stored
    );
    let stored = server
        .log()
        .read_stream(&"parcel/SE-9".parse().expect("stream"), 0, 10)
        .await
        .expect("read");
    let d = stored
        .iter()
        .find_map(|r| match r.decode().expect("decode") {
            DomainEvent::Parcel(pb::parcel_event::Event::Delivered(d)) => Some(d),
            _ => None,
        })
        .expect("delivered");
    assert_eq!(d.position, None, "not in the clear");
    let sealed = d.sealed_position.expect("sealed");
    let opened: Option<pb::GeoPoint> = server
        .vault()
        .unseal_message(&sealed, "parcel/SE-9/delivered")
        .expect("opens");
    assert_eq!(opened, Some(at));
    server.vault().forget(&household.subject).expect("forget");
    assert_eq!(
        server
            .vault()
            .unseal_message::<pb::GeoPoint>(&sealed, "parcel/SE-9/delivered")
            .expect("no error"),
        None
    );
}

/// A backlog sent at once, without waiting for acks: events on different
/// parcels are decided side by side, but each parcel's in the handheld's
/// order, and every ack comes back in the order sent.
#[tokio::test]
async fn a_backlog_sent_at_once_is_acknowledged_in_order_each_parcel_in_its_order() {
    let server = serve().await;
    let parcels: Vec<String> = (0..8).map(|n| format!("SE-{n}")).collect();
    on_route(
        &server,
        &parcels.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    // Round by round over the parcels: a start, a failure, a start, a delivery.
    let rounds = [started(), not_home(), started(), delivered()];
    let mut backlog = Vec::new();
    for report in &rounds {
        for p in &parcels {
            let seq = backlog.len() as u64 + 1;
            backlog.push(event(seq, p, report.clone()));
        }
    }
    let (tx, rx) = mpsc::channel(backlog.len());
    for e in &backlog {
        tx.send(e.clone()).await.expect("queued");
    }
    let mut acks = HandheldServiceClient::new(channel(&server).await)
        .stream_attempts(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut got = Vec::new();
    while got.len() < backlog.len() {
        got.push(
            acks.message()
                .await
                .expect("ack")
                .expect("an ack per event"),
        );
    }
    drop(tx);
    let sequences: Vec<u64> = got.iter().map(|a| a.sequence).collect();
    assert_eq!(sequences, (1..=backlog.len() as u64).collect::<Vec<_>>());
    for (a, e) in got.iter().zip(&backlog) {
        assert_eq!(result(a), attempt_ack::Result::Stored, "{a:?}");
        let round = (a.sequence as usize - 1) / parcels.len();
        assert_eq!(a.attempt, 1 + round as u32 / 2, "{}: {a:?}", e.parcel_id);
    }
    // Each parcel's history: exactly its four reports, in the order sent.
    for p in &parcels {
        let history = event_types(server.log().as_ref(), &format!("parcel/{p}")).await;
        assert_eq!(
            history[history.len() - 4..],
            [
                "parcel.attempt_started",
                "parcel.attempt_failed",
                "parcel.attempt_started",
                "parcel.delivered"
            ],
            "{p}: {history:?}"
        );
    }
}

/// Sends `events` on a new stream of `channel` and reads every answer:
/// how many were stored, and the status the stream ended with, if any.
async fn send_all(channel: Authed, events: Vec<HandheldEvent>) -> (usize, Option<tonic::Status>) {
    let (tx, rx) = mpsc::channel(64);
    for e in events {
        tx.send(e).await.expect("queue");
    }
    drop(tx);
    let mut acks = HandheldServiceClient::new(channel)
        .stream_attempts(ReceiverStream::new(rx))
        .await
        .expect("stream")
        .into_inner();
    let mut stored = 0;
    loop {
        match acks.message().await {
            Ok(Some(a)) => {
                assert_eq!(result(&a), attempt_ack::Result::Stored, "{}", a.error);
                stored += 1;
            }
            Ok(None) => return (stored, None),
            Err(e) => return (stored, Some(e)),
        }
    }
}

/// An open attempts stream: the sender of its events, and its acks.
type Open = (mpsc::Sender<HandheldEvent>, tonic::Streaming<AttemptAck>);

/// Opens an attempts stream on `channel`, or the status it is refused with.
async fn open_stream(channel: Authed) -> Result<Open, tonic::Status> {
    let (tx, rx) = mpsc::channel(1);
    let acks = HandheldServiceClient::new(channel)
        .stream_attempts(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, acks))
}

/// Opens a stream on a channel from `channel` as soon as a place is given
/// back, within `within`; every refusal before it is RESOURCE_EXHAUSTED.
async fn open_once_a_place_is_back<F, Fut>(channel: F, within: std::time::Duration) -> Open
where
    F: Fn() -> Fut,
    Fut: Future<Output = Authed>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match open_stream(channel().await).await {
            Ok(open) => return open,
            Err(e) => {
                assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
                assert!(std::time::Instant::now() < deadline, "no place given back");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}

/// Parcels `SE-0` … on drv-7's route STO-1-r1.
async fn parcels_on_route(server: &Sandbox, n: usize) -> Vec<String> {
    let parcels: Vec<String> = (0..n).map(|n| format!("SE-{n}")).collect();
    on_route(
        server,
        &parcels.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;
    parcels
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drivers_credential_holds_a_few_streams_and_one_rate_across_them() {
    let server = serve_with(threshold_handheld_service::Limits {
        events_per_second: 1.0,
        burst: 10.0,
        streams_per_driver: 4,
        streams_per_fleet: 2,
        ..Default::default()
    })
    .await;
    let parcels = parcels_on_route(&server, 40).await;
    // A stolen token of drv-7: each connection one more stream.
    let token = server.mint("hh-7", Role::Handheld, "drv-7");
    let stolen =
        || async { threshold_auth::authed(server.connect().await, Some(&token)).expect("a token") };
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(open_stream(stolen().await).await.expect("one of its four"));
    }
    let fifth = open_stream(stolen().await)
        .await
        .expect_err("a fifth stream is refused");
    assert_eq!(fifth.code(), tonic::Code::ResourceExhausted, "{fifth:?}");
    assert!(fifth.message().contains("its most"), "{}", fifth.message());
    // Another driver's handheld is not held back by drv-7's streams.
    let _other = open_stream(server.client_as(Role::Handheld, "drv-8"))
        .await
        .expect("another driver's stream");
    // A credential of every driver has a bound of its own (2 here).
    let mut fleet = Vec::new();
    for n in 0..3 {
        match (n, open_stream(channel(&server).await).await) {
            (0 | 1, Ok(open)) => fleet.push(open),
            (2, Err(e)) => assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}"),
            (n, other) => panic!("the fleet's stream {n}: {:?}", other.map(|_| ())),
        }
    }

    // One closed, its place is given back once its stream has ended.
    open.truncate(1);
    let more = open_once_a_place_is_back(stolen, std::time::Duration::from_secs(10)).await;
    drop(more);
    open.clear();

    // The rate is the handheld's, not each stream's: after a burst on one
    // stream, hanging up and opening another hands it no new burst.
    let first: Vec<HandheldEvent> = (0..10)
        .map(|i| event(i + 1, &parcels[i as usize], delivered()))
        .collect();
    let (stored, ended) = send_all(stolen().await, first).await;
    assert_eq!((stored, ended.map(|e| e.code())), (10, None), "the burst");
    let second: Vec<HandheldEvent> = (10..40)
        .map(|i| event(i + 1, &parcels[i as usize], delivered()))
        .collect();
    let (stored, ended) = send_all(stolen().await, second).await;
    let ended = ended.expect("the second stream is cut short");
    assert_eq!(ended.code(), tonic::Code::ResourceExhausted, "{ended:?}");
    assert!(
        ended.message().contains("from one handheld"),
        "{}",
        ended.message()
    );
    // A bucket of its own would have taken a burst of 10; the shared one
    // has only refilled at 1/s since the first stream's burst.
    assert!(
        stored < 10,
        "a second stream got a rate of its own: {stored} stored"
    );
}

/// A stream on a connection lost without a word holds its place only until
/// it has heard nothing for `stream_idle`: then it is closed, and the
/// driver's handheld gets in again. A stream that keeps sending stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_hears_nothing_is_closed_and_its_place_given_back() {
    let idle = std::time::Duration::from_secs(2);
    let server = serve_with(threshold_handheld_service::Limits {
        streams_per_driver: 1,
        stream_idle: idle,
        ..Default::default()
    })
    .await;
    let parcels = parcels_on_route(&server, 8).await;
    let token = server.mint("hh-7", Role::Handheld, "drv-7");
    let handheld =
        || async { threshold_auth::authed(server.connect().await, Some(&token)).expect("a token") };
    // The lost one: open, and silent from then on.
    let (_lost_tx, mut lost) = open_stream(handheld().await)
        .await
        .expect("the first stream");
    let refused = open_stream(handheld().await)
        .await
        .expect_err("its one place is held");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("hears nothing for 2 s"),
        "{}",
        refused.message()
    );
    let ended = tokio::time::timeout(4 * idle, lost.message())
        .await
        .expect("closed once idle")
        .expect_err("ends with a status");
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");

    // The handheld gets in again, and a stream that keeps sending, each
    // event within the idle time, outlives it.
    let (tx, mut acks) = open_once_a_place_is_back(handheld, 4 * idle).await;
    for (i, parcel) in parcels.iter().enumerate().take(5) {
        tx.send(event(i as u64 + 1, parcel, delivered()))
            .await
            .expect("sent");
        let ack = acks.message().await.expect("an ack").expect("open");
        assert_eq!(result(&ack), attempt_ack::Result::Stored, "{}", ack.error);
        tokio::time::sleep(idle / 2).await;
    }
}
