//! The handheld part of the adversarial suite: a driver's handheld records
//! loads into the van, attempts and deliveries only on parcels of that
//! driver's route (the route whose latest plan names the parcel); a load
//! only into the van of the parcel's own route, an attempt only on the
//! route the plan puts it on. Another driver's handheld, or
//! any handheld on a parcel no plan names, is refused in its ack, as
//! permission denied, counted, and nothing is stored; the right driver's
//! event, and everything valid after a refusal on the same stream, still
//! lands. A handheld's time is believed up to the device skew ahead of the
//! server's clock and back to the offline-resend bound; a driver's note is
//! stored only sealed under the household's key, and unreadable once the
//! household is forgotten.

use chrono::{Duration, Utc};
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::{
    AttemptAck, AttemptFailedReport, GetRouteRequest, HandheldEvent, LoadedReport,
    SubscribeOutcomesRequest, attempt_ack,
};
use threshold_auth::Role;
use threshold_domain::{DomainEvent, StreamId, pb};
use threshold_log::EventLog;
use threshold_testkit::fixtures::{
    HandheldStream, delivered, facts, handheld_event, manifested, not_home, parcel_history, started,
};
use threshold_testkit::{Sandbox, Service};

/// The production server running the handheld service, with SE-1..SE-4
/// manifested, route r-1 of drv-1 carrying SE-1 and SE-2, route r-2 of
/// drv-2 carrying SE-3; SE-4 is on no route.
async fn serve() -> Sandbox {
    serve_with([Service::Attempts]).await
}

async fn serve_with(services: impl IntoIterator<Item = Service>) -> Sandbox {
    let server = Sandbox::builder().services(services).start().await;
    let log = server.log();
    manifested(log.as_ref(), &["SE-1", "SE-2", "SE-3", "SE-4"]).await;
    plan(log.as_ref(), planned("r-1", "drv-1", &["SE-1", "SE-2"])).await;
    plan(log.as_ref(), planned("r-2", "drv-2", &["SE-3"])).await;
    // As a handheld does in the morning: its route, once the service has
    // seen the plans (a plan written a moment before a report on a parcel
    // that had none would otherwise count as unplanned).
    let routes = HandheldServiceClient::new(server.client_as(Role::Handheld, "drv-1"))
        .get_route(GetRouteRequest {
            driver_id: "drv-1".into(),
            date: Some(threshold_domain::country::date_to_proto(day())),
        })
        .await
        .expect("drv-1's route")
        .into_inner()
        .routes;
    assert_eq!(routes.len(), 1);
    server
}

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
}

fn stops(parcels: &[&str]) -> Vec<pb::PlannedStop> {
    parcels
        .iter()
        .zip(0..)
        .map(|(p, index)| pb::PlannedStop {
            index,
            parcel_ids: vec![(*p).into()],
            ..Default::default()
        })
        .collect()
}

fn planned(route: &str, driver: &str, parcels: &[&str]) -> (String, pb::route_event::Event) {
    (
        format!("route/{route}"),
        pb::route_event::Event::Planned(pb::RoutePlanned {
            route_id: route.into(),
            depot_id: "STO-1".into(),
            local_date: Some(threshold_domain::country::date_to_proto(day())),
            vehicle_id: format!("van-{route}"),
            driver_id: driver.into(),
            plan_version: 1,
            stops: stops(parcels),
        }),
    )
}

fn replanned(route: &str, version: u32, parcels: &[&str]) -> (String, pb::route_event::Event) {
    (
        format!("route/{route}"),
        pb::route_event::Event::Replanned(pb::RouteReplanned {
            plan_version: version,
            stops: stops(parcels),
            reason: "a van broke down".into(),
        }),
    )
}

async fn plan(log: &dyn EventLog, (stream, e): (String, pb::route_event::Event)) {
    facts(log, &stream, vec![DomainEvent::Route(e)], Utc::now()).await;
}

/// `driver`'s handheld reports `report` about `parcel`, its `seq`th event.
fn event(driver: &str, seq: u64, parcel: &str, report: Report) -> HandheldEvent {
    HandheldEvent {
        driver_id: driver.into(),
        device_id: format!("hh-{driver}"),
        sequence: seq,
        ..handheld_event(parcel, report)
    }
}

fn result(a: &AttemptAck) -> attempt_ack::Result {
    attempt_ack::Result::try_from(a.result).expect("result")
}

/// Asserts `a` is a permission-denied rejection that names neither the
/// other driver nor the route.
fn assert_refused(a: &AttemptAck) {
    assert_eq!(result(a), attempt_ack::Result::Rejected, "{a:?}");
    assert_eq!(a.code, tonic::Code::PermissionDenied as i32, "{a:?}");
    assert!(a.error.contains("permission denied"), "{}", a.error);
    assert!(
        !a.error.contains("drv-1"),
        "names the route's driver: {}",
        a.error
    );
    assert!(!a.error.contains("r-1"), "names the route: {}", a.error);
    assert_eq!((a.position, a.attempt), (0, 0));
}

/// Asserts `a` refuses `driver` as permission denied.
fn assert_refused_to(driver: &str, a: &AttemptAck) {
    assert_eq!(result(a), attempt_ack::Result::Rejected, "{a:?}");
    assert_eq!(a.code, tonic::Code::PermissionDenied as i32, "{a:?}");
    assert!(a.error.contains("permission denied"), "{}", a.error);
    assert!(a.error.contains(driver), "{}", a.error);
}

/// The event types on `parcel`'s stream.
async fn history(server: &Sandbox, parcel: &str) -> Vec<String> {
    threshold_testkit::fixtures::event_types(server.log().as_ref(), &format!("parcel/{parcel}"))
        .await
}

#[tokio::test]
async fn another_drivers_handheld_cannot_record_attempts_or_deliveries_on_drv1s_parcel() {
    let server = serve().await;
    let mut intruder = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    for (seq, report) in [(1, started()), (2, not_home()), (3, delivered())] {
        let a = intruder.send(&event("drv-2", seq, "SE-1", report)).await;
        assert_refused(&a);
        assert_eq!(a.sequence, seq);
    }
    // Nothing was stored: partners see no delivery.
    assert_eq!(history(&server, "SE-1").await, vec!["parcel.manifested"]);
    // Each refusal is recorded.
    assert_eq!(server.handhelds().refused("not_the_route_driver"), 3);
}

#[tokio::test]
async fn a_resend_by_the_right_driver_still_works() {
    let server = serve().await;
    let mut intruder = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    let stolen = event("drv-2", 1, "SE-1", delivered());
    assert_refused(&intruder.send(&stolen).await);

    // drv-1 sends its own report under the same event id: stored, as if
    // the refused one had never been sent.
    let mut driver = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let own = HandheldEvent {
        driver_id: "drv-1".into(),
        device_id: "hh-drv-1".into(),
        ..stolen.clone()
    };
    let a = driver.send(&own).await;
    assert_eq!(
        (result(&a), a.attempt),
        (attempt_ack::Result::Stored, 1),
        "{a:?}"
    );
    let again = driver.send(&own).await;
    assert_eq!(
        (result(&again), again.position),
        (attempt_ack::Result::Duplicate, a.position)
    );
    // The intruder resending is still refused, and stores nothing more.
    assert_refused(&intruder.send(&stolen).await);
    assert_eq!(
        history(&server, "SE-1").await,
        vec![
            "parcel.manifested",
            "parcel.attempt_started",
            "parcel.delivered"
        ]
    );
}

#[tokio::test]
async fn valid_events_after_a_refused_one_land() {
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    assert_refused(&hh.send(&event("drv-2", 1, "SE-1", started())).await);
    assert_refused(&hh.send(&event("drv-2", 2, "SE-2", delivered())).await);
    // Its own route's parcel, on the same stream.
    let a = hh.send(&event("drv-2", 3, "SE-3", not_home())).await;
    assert_eq!(
        (result(&a), a.attempt),
        (attempt_ack::Result::Stored, 1),
        "{a:?}"
    );
    let a = hh.send(&event("drv-2", 4, "SE-3", delivered())).await;
    assert_eq!(
        (result(&a), a.attempt),
        (attempt_ack::Result::Stored, 2),
        "{a:?}"
    );
    assert_refused(&hh.send(&event("drv-2", 5, "SE-1", delivered())).await);
    assert_eq!(history(&server, "SE-1").await, vec!["parcel.manifested"]);
    assert_eq!(history(&server, "SE-2").await, vec!["parcel.manifested"]);
    assert_eq!(
        history(&server, "SE-3").await.last().map(String::as_str),
        Some("parcel.delivered")
    );
}

#[tokio::test]
async fn reports_on_a_parcel_its_driver_already_delivered_are_refused_each_time_and_store_nothing()
{
    // The route's own driver, so custody lets them through to the parcel's
    // state: each is decided on the state the service kept after the
    // delivery, confirmed on the log before it is refused, and refused.
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let a = hh.send(&event("drv-1", 1, "SE-1", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    let stored = history(&server, "SE-1").await;
    for seq in 2..22 {
        let report = if seq % 2 == 0 {
            not_home()
        } else {
            delivered()
        };
        let a = hh.send(&event("drv-1", seq, "SE-1", report)).await;
        assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
        assert_ne!(a.code, tonic::Code::Ok as i32, "{a:?}");
        assert_eq!((a.sequence, a.position, a.attempt), (seq, 0, 0));
    }
    assert_eq!(
        history(&server, "SE-1").await,
        stored,
        "nothing more stored"
    );
    // The stream still takes its driver's valid reports.
    let a = hh.send(&event("drv-1", 22, "SE-2", not_home())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
}

#[tokio::test]
async fn a_replan_hands_a_parcel_to_the_new_routes_driver() {
    let server = serve().await;
    let log = server.log();
    // SE-2 moves from drv-1's r-1 to drv-2's r-2.
    plan(log.as_ref(), replanned("r-1", 2, &["SE-1"])).await;
    plan(log.as_ref(), replanned("r-2", 2, &["SE-3", "SE-2"])).await;

    let mut new = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    let a = new.send(&event("drv-2", 1, "SE-2", started())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");

    let mut old = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let a = old.send(&event("drv-1", 1, "SE-2", delivered())).await;
    assert_refused_to("drv-1", &a);
    // drv-1 keeps its remaining parcel.
    let a = old.send(&event("drv-1", 2, "SE-1", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
}

#[tokio::test]
async fn a_parcel_no_plan_names_is_refused_to_every_driver_and_recorded() {
    let server = serve().await;
    for (driver, report) in [("drv-2", delivered()), ("drv-1", not_home())] {
        let mut hh = HandheldStream::open(server.client_as(Role::Handheld, driver)).await;
        let a = hh.send(&event(driver, 1, "SE-4", report)).await;
        assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
        assert_eq!(a.code, tonic::Code::PermissionDenied as i32, "{a:?}");
        assert_eq!((a.position, a.attempt), (0, 0));
        // Told no more than another driver's parcel would tell.
        assert!(
            a.error.starts_with("driver_id: permission denied"),
            "{}",
            a.error
        );
        // The stream goes on: its own parcel still lands.
        let own = if driver == "drv-1" { "SE-1" } else { "SE-3" };
        let a = hh.send(&event(driver, 2, own, started())).await;
        assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    }
    assert_eq!(history(&server, "SE-4").await, vec!["parcel.manifested"]);
    assert_eq!(server.handhelds().refused("not_planned"), 2);
    assert_eq!(server.handhelds().refused("not_the_route_driver"), 0);

    // Planned now: its driver's report lands.
    plan(
        server.log().as_ref(),
        replanned("r-2", 2, &["SE-3", "SE-4"]),
    )
    .await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    let a = hh.send(&event("drv-2", 3, "SE-4", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
}

/// `driver`'s handheld reports `parcel` loaded into the van of `route`.
fn loaded(driver: &str, seq: u64, parcel: &str, route: &str) -> HandheldEvent {
    HandheldEvent {
        route_id: route.into(),
        ..event(driver, seq, parcel, Report::Loaded(LoadedReport {}))
    }
}

/// What planning records on `parcel`'s stream when a plan puts it on
/// `route`.
async fn assigned(log: &dyn EventLog, parcel: &str, route: &str) {
    let e = pb::parcel_event::Event::AssignedToRoute(pb::ParcelAssignedToRoute {
        route_id: route.into(),
        plan_version: 1,
        stop_index: 0,
    });
    facts(
        log,
        &format!("parcel/{parcel}"),
        vec![DomainEvent::Parcel(e)],
        Utc::now(),
    )
    .await;
}

#[tokio::test]
async fn a_parcel_is_loaded_and_attempted_only_by_its_driver_on_its_route() {
    let server = serve().await;
    let log = server.log();
    assigned(log.as_ref(), "SE-1", "r-1").await;
    // Another driver, naming the parcel's route or their own.
    let mut intruder = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    for (seq, route) in [(1, "r-1"), (2, "r-2")] {
        assert_refused_to(
            "drv-2",
            &intruder.send(&loaded("drv-2", seq, "SE-1", route)).await,
        );
    }
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let refused = |a: &AttemptAck, code: tonic::Code, error: &str| {
        assert_eq!(result(a), attempt_ack::Result::Rejected, "{a:?}");
        assert_eq!(a.code, code as i32, "{a:?}");
        assert!(a.error.starts_with(error), "{}", a.error);
    };
    // Its own driver, into the van of a route the parcel is not on.
    refused(
        &hh.send(&loaded("drv-1", 1, "SE-1", "r-2")).await,
        tonic::Code::FailedPrecondition,
        "parcel/SE-1: cannot load on a van when on route r-1, not r-2",
    );
    // Naming no route at all.
    refused(
        &hh.send(&loaded("drv-1", 2, "SE-1", "")).await,
        tonic::Code::InvalidArgument,
        "route_id: is missing",
    );
    // A parcel no plan names, and one whose assignment its stream lacks.
    refused(
        &hh.send(&loaded("drv-1", 3, "SE-4", "r-1")).await,
        tonic::Code::PermissionDenied,
        "driver_id: permission denied",
    );
    refused(
        &hh.send(&loaded("drv-1", 4, "SE-2", "r-1")).await,
        tonic::Code::FailedPrecondition,
        "parcel/SE-2: cannot load on a van when manifested",
    );
    for parcel in ["SE-1", "SE-2", "SE-4"] {
        assert_eq!(
            history(&server, parcel).await.last().map(String::as_str),
            Some(if parcel == "SE-1" {
                "parcel.assigned_to_route"
            } else {
                "parcel.manifested"
            }),
            "{parcel}"
        );
    }
    assert_eq!(server.handhelds().refused("not_the_route_driver"), 2);
    assert_eq!(server.handhelds().refused("not_planned"), 1);

    // Into its own van: out for delivery; resent, or scanned again, nothing new.
    let scan = loaded("drv-1", 5, "SE-1", "r-1");
    let a = hh.send(&scan).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    let again = hh.send(&scan).await;
    assert_eq!(
        (result(&again), again.position),
        (attempt_ack::Result::Duplicate, a.position)
    );
    let rescanned = hh.send(&loaded("drv-1", 6, "SE-1", "r-1")).await;
    assert_eq!(
        (result(&rescanned), rescanned.position),
        (attempt_ack::Result::Duplicate, 0),
        "{rescanned:?}"
    );
    assert_eq!(
        history(&server, "SE-1").await,
        vec![
            "parcel.manifested",
            "parcel.assigned_to_route",
            "parcel.out_for_delivery"
        ]
    );
    // Moved by a replan onto another of drv-1's routes: the morning's scan,
    // resent, is still what it was; a scan into the old van is refused.
    plan(log.as_ref(), planned("r-3", "drv-1", &["SE-1"])).await;
    plan(log.as_ref(), replanned("r-1", 2, &["SE-2"])).await;
    assigned(log.as_ref(), "SE-1", "r-3").await;
    let resent = hh.send(&scan).await;
    assert_eq!(
        (result(&resent), resent.position),
        (attempt_ack::Result::Duplicate, a.position),
        "{resent:?}"
    );
    refused(
        &hh.send(&loaded("drv-1", 7, "SE-1", "r-1")).await,
        tonic::Code::FailedPrecondition,
        "parcel/SE-1: cannot load on a van when on route r-3, not r-1",
    );
    // At the door: not on the route it has left, on the one it is on.
    let at_door = |seq, route: &str| HandheldEvent {
        route_id: route.into(),
        ..event("drv-1", seq, "SE-1", started())
    };
    refused(
        &hh.send(&at_door(8, "r-1")).await,
        tonic::Code::FailedPrecondition,
        "parcel/SE-1: cannot start an attempt when on route r-3, not r-1",
    );
    assert_eq!(
        history(&server, "SE-1").await.last().map(String::as_str),
        Some("parcel.assigned_to_route")
    );
    let a = hh.send(&at_door(9, "r-3")).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    // There, a scan into the van is refused by the parcel's state.
    refused(
        &hh.send(&loaded("drv-1", 10, "SE-1", "r-3")).await,
        tonic::Code::FailedPrecondition,
        "parcel/SE-1: cannot load on a van when an attempt is under way",
    );
    assert_eq!(
        history(&server, "SE-1").await.last().map(String::as_str),
        Some("parcel.attempt_started")
    );

    // SE-2's attempt on r-1 fails; a replan the same day moves it to r-3.
    // Planning cannot assign a parcel whose attempt failed, so its stream
    // still says r-1: the next attempt is held to the plan's r-3.
    assigned(log.as_ref(), "SE-2", "r-1").await;
    let on_se2 = |seq, route: &str, report| HandheldEvent {
        route_id: route.into(),
        ..event("drv-1", seq, "SE-2", report)
    };
    for (seq, report) in [(11, started()), (12, not_home())] {
        let a = hh.send(&on_se2(seq, "r-1", report)).await;
        assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    }
    plan(log.as_ref(), replanned("r-3", 2, &["SE-1", "SE-2"])).await;
    plan(log.as_ref(), replanned("r-1", 3, &[])).await;
    refused(
        &hh.send(&on_se2(13, "r-1", started())).await,
        tonic::Code::FailedPrecondition,
        "parcel/SE-2: cannot start an attempt when on route r-3, not r-1",
    );
    let a = hh.send(&on_se2(14, "r-3", started())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    let routes: Vec<String> = parcel_history(log.as_ref(), "SE-2")
        .await
        .into_iter()
        .filter_map(|e| match e {
            pb::parcel_event::Event::AttemptStarted(a) => Some(a.route_id),
            _ => None,
        })
        .collect();
    assert_eq!(routes, vec!["r-1", "r-3"]);
}

/// `event` as happening at `at`, by the handheld's clock.
fn dated(mut e: HandheldEvent, at: chrono::DateTime<Utc>) -> HandheldEvent {
    e.occurred_at = Some(threshold_domain::country::timestamp(at));
    e
}

/// When each event on `parcel`'s stream is recorded as happening.
async fn times(server: &Sandbox, parcel: &str) -> Vec<chrono::DateTime<Utc>> {
    server
        .log()
        .read_stream(
            &format!("parcel/{parcel}")
                .parse::<StreamId>()
                .expect("stream"),
            0,
            100,
        )
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.event.occurred_at)
        .collect()
}

#[tokio::test]
async fn an_event_dated_beyond_the_skew_ahead_is_refused_and_recorded() {
    use threshold_domain::home::DEVICE_CLOCK_SKEW;
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let ahead = Utc::now() + DEVICE_CLOCK_SKEW + Duration::minutes(5);
    let a = hh
        .send(&dated(event("drv-1", 1, "SE-1", delivered()), ahead))
        .await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
    assert!(a.error.starts_with("occurred_at:"), "{}", a.error);
    assert_eq!(a.code, tonic::Code::InvalidArgument as i32, "{a:?}");
    assert!(a.error.contains("ahead"), "{}", a.error);
    assert_eq!(history(&server, "SE-1").await, vec!["parcel.manifested"]);
    assert_eq!(server.handhelds().refused("occurred_at_ahead"), 1);

    // A clock a little fast: stored, at the server's time, not the future.
    let a = hh
        .send(&dated(
            event("drv-1", 2, "SE-1", delivered()),
            Utc::now() + Duration::seconds(60),
        ))
        .await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
    let now = Utc::now();
    assert!(times(&server, "SE-1").await.iter().all(|t| *t <= now));
}

#[tokio::test]
async fn an_offline_resend_hours_old_is_accepted_with_its_own_time() {
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let then = Utc::now() - Duration::hours(6);
    let e = dated(event("drv-1", 1, "SE-1", not_home()), then);
    let a = hh.send(&e).await;
    assert_eq!(
        (result(&a), a.attempt),
        (attempt_ack::Result::Stored, 1),
        "{a:?}"
    );
    let recorded = times(&server, "SE-1").await;
    assert_eq!(recorded.len(), 3, "manifested, started, failed");
    let at =
        threshold_domain::country::instant(e.occurred_at.as_ref().expect("time")).expect("time");
    // The handheld's time (to the log's precision), not the resend's.
    assert!(
        (recorded[2] - at).num_milliseconds().abs() < 1,
        "{} stored for {at}",
        recorded[2]
    );
    assert!(recorded[2] < Utc::now() - Duration::hours(5));
    assert_eq!(result(&hh.send(&e).await), attempt_ack::Result::Duplicate);
}

#[tokio::test]
async fn an_event_older_than_the_offline_bound_is_refused_and_recorded() {
    use threshold_domain::custody::OFFLINE_RESEND_BOUND;
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let stale = Utc::now() - OFFLINE_RESEND_BOUND - Duration::hours(1);
    let a = hh
        .send(&dated(event("drv-1", 1, "SE-1", delivered()), stale))
        .await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
    assert!(a.error.starts_with("occurred_at:"), "{}", a.error);
    assert_eq!(a.code, tonic::Code::InvalidArgument as i32, "{a:?}");
    assert!(a.error.contains("behind"), "{}", a.error);
    assert_eq!(history(&server, "SE-1").await, vec!["parcel.manifested"]);
    assert_eq!(server.handhelds().refused("occurred_at_too_old"), 1);
    // The stream goes on.
    let a = hh.send(&event("drv-1", 2, "SE-1", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
}

/// The notes the carrier's analysts see in the outcomes from the start of
/// the log, `n` of them.
async fn carrier_notes(server: &Sandbox, n: usize) -> Vec<String> {
    let mut outcomes = OutcomeServiceClient::new(server.analyst())
        .subscribe(SubscribeOutcomesRequest { from_cursor: 0 })
        .await
        .expect("subscribe")
        .into_inner();
    let mut notes = Vec::new();
    while notes.len() < n {
        let o = tokio::time::timeout(std::time::Duration::from_secs(10), outcomes.message())
            .await
            .expect("an outcome in time")
            .expect("outcome")
            .expect("open");
        notes.push(o.note);
    }
    notes
}

#[tokio::test]
async fn a_drivers_note_is_stored_sealed_read_by_the_carrier_and_unreadable_after_forget() {
    const NOTE: &str = "Mrs Lind, door code 4711, not answering";
    let server = serve_with([Service::Attempts, Service::Outcomes]).await;
    // SE-9, whose address the manifest service sealed under its household.
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
        delivery_date: Some(threshold_domain::country::date_to_proto(day())),
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
        Utc::now(),
    )
    .await;
    plan(
        server.log().as_ref(),
        replanned("r-1", 2, &["SE-1", "SE-2", "SE-9"]),
    )
    .await;
    let failed = |note: &str| {
        Report::Failed(AttemptFailedReport {
            reason: pb::FailureReason::NoAccess as i32,
            note: note.into(),
        })
    };
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let a = hh.send(&event("drv-1", 1, "SE-9", failed(NOTE))).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");

    // Not in the clear: neither in the stored event nor anywhere in the
    // log's files.
    let stored = failures(&server, "SE-9").await;
    assert_eq!(stored.len(), 1);
    assert!(stored[0].note.is_empty(), "{:?}", stored[0]);
    let sealed = stored[0].sealed_note.clone().expect("sealed");
    assert_eq!(sealed.subject, household.subject);
    for entry in std::fs::read_dir(server.data()).expect("data dir") {
        let path = entry.expect("entry").path();
        if path.is_file() {
            let bytes = std::fs::read(&path).expect("read");
            assert!(
                !bytes.windows(9).any(|w| w == b"door code"),
                "the note is in the clear in {}",
                path.display()
            );
        }
    }
    // The carrier's analysts read it, opened from its seal.
    assert_eq!(carrier_notes(&server, 1).await, vec![NOTE.to_owned()]);

    // The household is forgotten: the note no longer opens anywhere.
    server.vault().forget(&household.subject).expect("forget");
    assert_eq!(
        server
            .vault()
            .unseal(&sealed, &threshold_domain::parcel::note_context("SE-9", 1))
            .expect("no error"),
        None
    );
    assert_eq!(carrier_notes(&server, 1).await, vec![String::new()]);
    // A later attempt is still stored, without its note: nothing new is
    // sealed under a forgotten household.
    let a = hh
        .send(&event(
            "drv-1",
            2,
            "SE-9",
            failed("left a card, door code 4711"),
        ))
        .await;
    assert_eq!(
        (result(&a), a.attempt),
        (attempt_ack::Result::Stored, 2),
        "{a:?}"
    );
    let stored = failures(&server, "SE-9").await;
    assert_eq!(stored.len(), 2);
    assert!(stored[1].note.is_empty() && stored[1].sealed_note.is_none());
    assert_eq!(
        carrier_notes(&server, 2).await,
        vec![String::new(), String::new()]
    );
}

/// The failed attempts stored on `parcel`'s stream.
async fn failures(server: &Sandbox, parcel: &str) -> Vec<pb::AttemptFailed> {
    server
        .log()
        .read_stream(
            &format!("parcel/{parcel}")
                .parse::<StreamId>()
                .expect("stream"),
            0,
            100,
        )
        .await
        .expect("read")
        .iter()
        .filter_map(|r| match r.decode() {
            Ok(DomainEvent::Parcel(pb::parcel_event::Event::AttemptFailed(f))) => Some(f),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn on_a_simulation_server_a_handheld_is_bounded_by_the_simulated_time_its_stream_carries() {
    let server = Sandbox::builder()
        .services([Service::Attempts])
        .simulated()
        .start()
        .await;
    let log = server.log();
    manifested(log.as_ref(), &["SE-1"]).await;
    plan(log.as_ref(), planned("r-1", "drv-1", &["SE-1"])).await;
    let client = || HandheldServiceClient::new(server.client_as(Role::Handheld, "drv-1"));
    // Without the simulation's time, no stream.
    let (_tx, rx) = tokio::sync::mpsc::channel::<HandheldEvent>(1);
    let refused = client()
        .stream_attempts(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("no simulated time");
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );

    // The simulated day's morning: an event of that morning lands, one an
    // hour after the stream was sent is refused.
    let sent = chrono::DateTime::parse_from_rfc3339("2026-11-23T09:00:00Z")
        .expect("time")
        .with_timezone(&Utc);
    let events = vec![
        dated(
            event("drv-1", 1, "SE-1", not_home()),
            sent - Duration::minutes(10),
        ),
        dated(
            event("drv-1", 2, "SE-1", delivered()),
            sent + Duration::hours(1),
        ),
    ];
    let mut request = tonic::Request::new(tokio_stream::iter(events));
    request.metadata_mut().insert(
        threshold_api::SIMULATED_TIME_HEADER,
        sent.to_rfc3339().parse().expect("ascii"),
    );
    let mut acks = client()
        .stream_attempts(request)
        .await
        .expect("stream")
        .into_inner();
    let first = acks.message().await.expect("ack").expect("an ack");
    assert_eq!(result(&first), attempt_ack::Result::Stored, "{first:?}");
    let second = acks.message().await.expect("ack").expect("an ack");
    assert_eq!(result(&second), attempt_ack::Result::Rejected, "{second:?}");
    assert!(second.error.starts_with("occurred_at:"), "{}", second.error);
    assert_eq!(server.handhelds().refused("occurred_at_ahead"), 1);
}

/// A report sent under the id of another report already stored on the
/// parcel is not a resend of it: answered DUPLICATE, the handheld would
/// drop a delivery never stored. It is refused, counted, stores nothing,
/// and the report under its own id is stored.
#[tokio::test]
async fn another_report_under_a_stored_reports_id_is_refused_not_taken_for_a_resend() {
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    let started = event("drv-1", 1, "SE-1", started());
    let first = hh.send(&started).await;
    assert_eq!(result(&first), attempt_ack::Result::Stored, "{first:?}");
    let reused = HandheldEvent {
        event_id: started.event_id.clone(),
        ..event("drv-1", 2, "SE-1", delivered())
    };
    let a = hh.send(&reused).await;
    assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
    assert_eq!(a.code, tonic::Code::AlreadyExists as i32, "{a:?}");
    assert!(a.error.starts_with("event_id:"), "{}", a.error);
    assert!(
        a.error.contains("started") && a.error.contains("delivered"),
        "{}",
        a.error
    );
    assert_eq!(server.handhelds().refused("event_id_reused"), 1);
    assert_eq!(
        history(&server, "SE-1").await,
        vec!["parcel.manifested", "parcel.attempt_started"]
    );
    // The same report sent again is still a resend.
    let again = hh.send(&started).await;
    assert_eq!(
        (result(&again), again.position),
        (attempt_ack::Result::Duplicate, first.position)
    );
    // And the delivery under its own id is stored.
    let own = hh.send(&event("drv-1", 3, "SE-1", delivered())).await;
    assert_eq!(result(&own), attempt_ack::Result::Stored, "{own:?}");
}

/// The route's own driver cannot grow a parcel's stream (and its partner's
/// feed) without bound by failing attempt after attempt: after
/// `MAX_ATTEMPTS` another is refused, while the delivery still lands.
#[tokio::test]
async fn a_parcel_takes_a_bounded_number_of_attempts_and_is_still_delivered() {
    use threshold_domain::parcel::MAX_ATTEMPTS;
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-1")).await;
    for n in 1..=u64::from(MAX_ATTEMPTS) {
        let a = hh.send(&event("drv-1", n, "SE-1", not_home())).await;
        assert_eq!(result(&a), attempt_ack::Result::Stored, "{n}: {a:?}");
    }
    let head = server.log().head().await.expect("head");
    let seq = u64::from(MAX_ATTEMPTS) + 1;
    for (s, report) in [(seq, not_home()), (seq + 1, started())] {
        let a = hh.send(&event("drv-1", s, "SE-1", report)).await;
        assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
        assert_eq!(a.code, tonic::Code::FailedPrecondition as i32, "{a:?}");
        assert!(
            a.error
                .contains(&format!("has had {MAX_ATTEMPTS} attempts, the most")),
            "{}",
            a.error
        );
    }
    assert_eq!(
        server.log().head().await.expect("head"),
        head,
        "nothing stored"
    );
    let a = hh.send(&event("drv-1", seq + 2, "SE-1", delivered())).await;
    assert_eq!(
        (result(&a), a.attempt),
        (attempt_ack::Result::Stored, MAX_ATTEMPTS + 1),
        "{a:?}"
    );
}
