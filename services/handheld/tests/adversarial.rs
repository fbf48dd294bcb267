//! The handheld part of the adversarial suite: a driver's handheld records
//! attempts and deliveries only on parcels of that driver's route (the
//! route whose latest plan names the parcel). Another driver's handheld is
//! refused in its ack, as permission denied, and nothing is stored; the
//! right driver's event, and everything valid after a refusal on the same
//! stream, still lands.

use chrono::Utc;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::{AttemptAck, GetRouteRequest, HandheldEvent, attempt_ack};
use threshold_auth::Role;
use threshold_domain::{DomainEvent, StreamId, pb};
use threshold_log::EventLog;
use threshold_testkit::fixtures::{
    HandheldStream, delivered, facts, handheld_event, manifested, not_home, started,
};
use threshold_testkit::{Sandbox, Service};

/// The production server running the handheld service, with SE-1..SE-4
/// manifested, route r-1 of drv-1 carrying SE-1 and SE-2, route r-2 of
/// drv-2 carrying SE-3; SE-4 is on no route.
async fn serve() -> Sandbox {
    let server = Sandbox::builder()
        .services([Service::Attempts])
        .start()
        .await;
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
    assert!(a.error.contains("permission denied"), "{}", a.error);
    assert!(
        !a.error.contains("drv-1"),
        "names the route's driver: {}",
        a.error
    );
    assert!(!a.error.contains("r-1"), "names the route: {}", a.error);
    assert_eq!((a.position, a.attempt), (0, 0));
}

/// The event types on `parcel`'s stream.
async fn history(server: &Sandbox, parcel: &str) -> Vec<String> {
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
        .map(|r| r.event.event_type)
        .collect()
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
    assert_eq!(result(&a), attempt_ack::Result::Rejected, "{a:?}");
    assert!(a.error.contains("permission denied"), "{}", a.error);
    // drv-1 keeps its remaining parcel.
    let a = old.send(&event("drv-1", 2, "SE-1", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
}

#[tokio::test]
async fn a_parcel_no_plan_names_is_still_accepted_from_its_reporting_driver() {
    // The documented interim rule (docs/threat-model.md): refusing
    // unplanned parcels waits for every reporter to be on a planned route.
    let server = serve().await;
    let mut hh = HandheldStream::open(server.client_as(Role::Handheld, "drv-2")).await;
    let a = hh.send(&event("drv-2", 1, "SE-4", delivered())).await;
    assert_eq!(result(&a), attempt_ack::Result::Stored, "{a:?}");
}
