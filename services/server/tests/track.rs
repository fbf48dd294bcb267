//! Track and trace over gRPC, against a server on loopback: who may follow
//! which parcel, what each sees of it, a depot's day a page at a time, and
//! a bad request named by its field.

use std::collections::BTreeMap;
use std::time::Duration;

use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{
    HandheldEvent, LoadedReport, ParcelTrack, PlanDayRequest, TrackDayRequest, TrackRequest,
};
use threshold_auth::{Authed, Role};
use threshold_domain::Country;
use threshold_domain::country::date_to_proto;
use threshold_routing::depot::{Fleet, Fleets};
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{HandheldStream, handheld_event, load_manifest, manifest};
use tonic::Code;

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
}

/// Oslo's day: nordshop's three parcels (one too heavy for any van, one
/// whose window no van can make), and one of another partner.
async fn oslo_day() -> Sandbox {
    let server = Sandbox::builder()
        .fleets(Fleets {
            default: Fleet {
                vans: 2,
                in_home_cleared: 1,
                capacity_kg: 300.0,
                ..Fleet::default()
            },
            depots: BTreeMap::new(),
        })
        .start()
        .await;
    let rows = manifest(
        "NO-OSL-A1,nordshop,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.92,10.76,doorstep,2,,
NO-OSL-H1,nordshop,NO,OSL-1,2026-11-23,Gate 2,0150,Oslo,59.93,10.74,doorstep,400,,
NO-OSL-W1,nordshop,NO,OSL-1,2026-11-23,Gate 3,0150,Oslo,59.90,10.77,in_home,2,05:00,06:00
NO-OSL-Z1,fjellbutikk,NO,OSL-1,2026-11-23,Gate 4,0150,Oslo,59.91,10.75,doorstep,2,,
",
    );
    load_manifest(server.planner(), "oslo.csv", &rows).await;
    PlanningServiceClient::new(server.planner())
        .plan_day(PlanDayRequest {
            date: Some(date_to_proto(day())),
            seconds_per_depot: 0.3,
            ..Default::default()
        })
        .await
        .expect("plan");
    server
}

/// `parcel` as `caller` tracks it, once the model holds `status`.
async fn tracked(caller: Authed, parcel: &str, status: &str) -> ParcelTrack {
    let mut client = OutcomeServiceClient::new(caller);
    let mut last = None;
    for _ in 0..200 {
        match client
            .track(TrackRequest {
                parcel_id: parcel.into(),
            })
            .await
        {
            Ok(t) if t.get_ref().status == status => return t.into_inner(),
            Ok(t) => last = Some(format!("{:?}", t.into_inner())),
            Err(s) if s.code() == Code::NotFound => last = Some(s.to_string()),
            Err(s) => panic!("{parcel}: {s}"),
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{parcel} never tracked as {status}: {last:?}");
}

/// The route the plan put `parcel` on, as its stream says.
async fn route_of(server: &Sandbox, parcel: &str) -> String {
    let stream = format!("parcel/{parcel}").parse().expect("stream");
    let events = server
        .log()
        .read_stream(&stream, 0, 100)
        .await
        .expect("read");
    events
        .iter()
        .find_map(|e| match e.decode().expect("decode") {
            threshold_domain::DomainEvent::Parcel(
                threshold_domain::pb::parcel_event::Event::AssignedToRoute(a),
            ) => Some(a.route_id),
            _ => None,
        })
        .unwrap_or_else(|| panic!("{parcel} is on no route"))
}

async fn track_code(caller: Authed, parcel: &str) -> Code {
    match OutcomeServiceClient::new(caller)
        .track(TrackRequest {
            parcel_id: parcel.into(),
        })
        .await
    {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    }
}

#[tokio::test]
async fn each_caller_tracks_the_parcels_it_may_see_and_sees_what_it_may() {
    let server = oslo_day().await;
    // The partner sees its parcel was left out, not the planner's reason.
    let theirs = tracked(server.partner("nordshop"), "NO-OSL-H1", "left_out").await;
    let steps: Vec<(&str, &str)> = theirs
        .steps
        .iter()
        .map(|s| (s.milestone.as_str(), s.detail.as_str()))
        .collect();
    assert_eq!(steps, [("manifested", "2026-11-23"), ("left_out", "")]);
    assert_eq!(
        (
            theirs.partner_id.as_str(),
            theirs.depot_id.as_str(),
            theirs.attempts
        ),
        ("nordshop", "OSL-1", 0)
    );
    assert_eq!(theirs.country, Country::No.to_proto() as i32);
    assert_eq!(theirs.delivery_date, Some(date_to_proto(day())));
    assert!(theirs.steps[0].local_time.starts_with("20"), "{theirs:?}");
    // The carrier sees why.
    let carrier = tracked(server.analyst(), "NO-OSL-H1", "left_out").await;
    assert!(
        carrier.steps[1].detail.contains("more than any"),
        "{carrier:?}"
    );
    let planner = tracked(
        server.client_as(Role::Planner, "OSL-1"),
        "NO-OSL-H1",
        "left_out",
    )
    .await;
    assert_eq!(planner.steps, carrier.steps);
    // A planned parcel is on its route; scanned into its van by the
    // route's driver, out for delivery.
    let planned = tracked(server.partner("nordshop"), "NO-OSL-A1", "on_route").await;
    let steps: Vec<&str> = planned.steps.iter().map(|s| s.milestone.as_str()).collect();
    assert_eq!(steps, ["manifested", "on_route"]);
    let route = route_of(&server, "NO-OSL-A1").await;
    let driver = route.replace("-2026-11-23-", "-drv-");
    let mut handheld = HandheldStream::open(server.client_as(Role::Handheld, &driver)).await;
    let scan = HandheldEvent {
        driver_id: driver.clone(),
        route_id: route,
        ..handheld_event("NO-OSL-A1", Report::Loaded(LoadedReport {}))
    };
    let a = handheld.send(&scan).await;
    assert_eq!(a.code, 0, "{a:?}");
    let out = tracked(server.partner("nordshop"), "NO-OSL-A1", "out_for_delivery").await;
    let steps: Vec<&str> = out.steps.iter().map(|s| s.milestone.as_str()).collect();
    assert_eq!(steps, ["manifested", "on_route", "out_for_delivery"]);

    // Another partner's parcel, another depot's planner, a parcel that
    // does not exist: one answer, so ids cannot be probed.
    tracked(server.partner("fjellbutikk"), "NO-OSL-Z1", "on_route").await;
    assert_eq!(
        track_code(server.partner("nordshop"), "NO-OSL-Z1").await,
        Code::NotFound
    );
    assert_eq!(
        track_code(server.client_as(Role::Planner, "BGO-1"), "NO-OSL-A1").await,
        Code::NotFound
    );
    assert_eq!(
        track_code(server.partner("nordshop"), "NO-OSL-NOPE").await,
        Code::NotFound
    );
    // Roles that follow no parcels.
    for role in [Role::Handheld, Role::Resident, Role::LockVendor] {
        assert_eq!(
            track_code(server.as_role(role), "NO-OSL-A1").await,
            Code::PermissionDenied,
            "{role:?}"
        );
    }
    assert_eq!(
        track_code(server.unauthenticated(), "NO-OSL-A1").await,
        Code::Unauthenticated
    );
}

fn day_request(depot: &str, after: &str, size: u32) -> TrackDayRequest {
    TrackDayRequest {
        country: Country::No.to_proto() as i32,
        depot_id: depot.into(),
        delivery_date: Some(date_to_proto(day())),
        page_after: after.into(),
        page_size: size,
    }
}

#[tokio::test]
async fn a_depot_s_day_pages_to_its_planner_and_a_bad_request_is_named() {
    let server = oslo_day().await;
    for parcel in ["NO-OSL-H1", "NO-OSL-W1"] {
        tracked(server.analyst(), parcel, "left_out").await;
    }
    let mut planner = OutcomeServiceClient::new(server.client_as(Role::Planner, "OSL-1"));
    let mut seen = Vec::new();
    let mut after = String::new();
    let mut pages = 0;
    loop {
        let page = planner
            .track_day(day_request("OSL-1", &after, 3))
            .await
            .expect("a page")
            .into_inner();
        pages += 1;
        assert!(page.parcels.len() <= 3);
        assert!(page.parcels.iter().all(|p| p.steps.is_empty()));
        seen.extend(
            page.parcels
                .iter()
                .map(|p| (p.parcel_id.clone(), p.status.clone())),
        );
        if page.next_page_after.is_empty() {
            break;
        }
        after = page.next_page_after;
    }
    assert_eq!(pages, 2);
    let statuses: BTreeMap<&str, &str> = seen
        .iter()
        .map(|(id, s)| (id.as_str(), s.as_str()))
        .collect();
    assert_eq!(
        statuses,
        BTreeMap::from([
            ("NO-OSL-A1", "on_route"),
            ("NO-OSL-H1", "left_out"),
            ("NO-OSL-W1", "left_out"),
            ("NO-OSL-Z1", "on_route"),
        ])
    );

    // Another depot's planner, and partners, are refused the day.
    for caller in [
        server.client_as(Role::Planner, "BGO-1"),
        server.partner("nordshop"),
    ] {
        let refused = OutcomeServiceClient::new(caller)
            .track_day(day_request("OSL-1", "", 10))
            .await
            .expect_err("refused");
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused}");
    }

    // Bad requests name their field.
    let mut analyst = OutcomeServiceClient::new(server.analyst());
    let bad = [
        (day_request("OSL-1", "", 1_001), "page_size"),
        (
            TrackDayRequest {
                delivery_date: None,
                ..day_request("OSL-1", "", 10)
            },
            "delivery_date",
        ),
        (
            TrackDayRequest {
                country: 0,
                ..day_request("OSL-1", "", 10)
            },
            "country",
        ),
        (day_request("", "", 10), "depot_id"),
        (day_request("OSL-1", &"x".repeat(129), 10), "page_after"),
    ];
    for (request, field) in bad {
        let s = analyst.track_day(request).await.expect_err(field);
        assert_eq!(s.code(), Code::InvalidArgument, "{field}: {s}");
        assert!(s.message().starts_with(field), "{field}: {s}");
    }
    for id in [String::new(), "x".repeat(129)] {
        let s = analyst
            .track(TrackRequest { parcel_id: id })
            .await
            .expect_err("refused");
        assert_eq!(s.code(), Code::InvalidArgument, "{s}");
        assert!(s.message().starts_with("parcel_id"), "{s}");
    }
}
