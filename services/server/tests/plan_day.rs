//! PlanningService end to end on 127.0.0.1:0: the Norwegian sample day is
//! loaded through ManifestService, planned, read back by each driver through
//! HandheldService.GetRoute, and planned again after parcels are added.

use std::collections::{BTreeMap, BTreeSet};
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{GetRouteRequest, PlanDayReply, PlanDayRequest};
use threshold_domain::country::{date_to_proto, instant};
use threshold_manifest::{ManifestReader, Row};
use threshold_routing::depot::{Fleet, Fleets};
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{load_manifest, manifest};

const SAMPLE: &str = include_str!("../../../crates/manifest/samples/2026-11-23-no.csv");

fn fleets() -> Fleets {
    let small = Fleet {
        vans: 4,
        in_home_cleared: 2,
        capacity_kg: 300.0,
        ..Fleet::default()
    };
    Fleets {
        default: small,
        depots: BTreeMap::new(),
    }
}

fn request() -> PlanDayRequest {
    PlanDayRequest {
        date: Some(date_to_proto(
            chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
        )),
        depot_ids: vec![],
        seconds_per_depot: 0.5,
        objective: String::new(),
        ..Default::default()
    }
}

/// Every driver's stops for the day, read through GetRoute: parcel → (driver, planned arrival).
async fn routes(
    server: &Sandbox,
    reply: &PlanDayReply,
) -> BTreeMap<String, (String, chrono::DateTime<chrono::Utc>)> {
    let mut handheld = HandheldServiceClient::new(server.handheld());
    let mut out = BTreeMap::new();
    for depot in &reply.depots {
        for van in 0..depot.vans_available {
            let driver = format!("{}-drv-{van:02}", depot.depot_id);
            let got = handheld
                .get_route(GetRouteRequest {
                    driver_id: driver.clone(),
                    date: request().date,
                })
                .await
                .expect("route")
                .into_inner();
            for route in got.routes {
                for stop in route.stops {
                    let at =
                        instant(stop.planned_arrival.as_ref().expect("arrival")).expect("time");
                    for p in stop.parcel_ids {
                        assert!(
                            out.insert(p.clone(), (driver.clone(), at)).is_none(),
                            "{p} is on two routes"
                        );
                    }
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_is_planned_served_to_drivers_and_replanned_keeping_vans() {
    let server = Sandbox::builder().fleets(fleets()).start().await;
    load_manifest(server.planner(), "no.csv", SAMPLE).await;
    let mut planning = PlanningServiceClient::new(server.planner());

    let first = planning
        .plan_day(request())
        .await
        .expect("plan")
        .into_inner();
    let depots: BTreeSet<&str> = first.depots.iter().map(|d| d.depot_id.as_str()).collect();
    assert_eq!(depots, BTreeSet::from(["BGO-1", "OSL-1"]));
    for d in &first.depots {
        assert!(d.unassigned.is_empty(), "{:?}", d.unassigned);
        assert_eq!(d.parcels, 30);
        assert!(d.vans_used >= 1 && d.vans_used <= d.vans_available);
        assert_eq!(d.routes_changed, d.vans_used);
        assert!(d.distance_m > 0.0 && d.driving_s > 0.0);
    }

    // Every parcel is on exactly one driver's route; in-home parcels inside
    // their window, with a driver cleared for in-home (vans 00 and 01).
    let planned = routes(&server, &first).await;
    let mut in_home = 0;
    for row in ManifestReader::new(SAMPLE.as_bytes(), "no.csv").expect("csv") {
        let Row::Accepted { parcel, .. } = row else {
            panic!("sample rows are valid")
        };
        let (driver, at) = planned.get(&parcel.parcel_id).expect("planned");
        if let Some(w) = &parcel.in_home_window {
            in_home += 1;
            let (start, end) = threshold_domain::country::window_bounds(w).expect("window");
            assert!(
                *at >= start && *at <= end,
                "{}: {at} outside {start}..{end}",
                parcel.parcel_id
            );
            assert!(
                driver.ends_with("-00") || driver.ends_with("-01"),
                "{driver}"
            );
        }
    }
    assert_eq!(planned.len(), 60);
    assert!(in_home > 0);
    // Each parcel's own stream says which route and stop: once.
    let log = server.log();
    let mut assigned_to = BTreeMap::new();
    for (parcel, (driver, _)) in &planned {
        let a = assignments(&*log, parcel).await;
        assert_eq!(a.len(), 1, "{parcel}: {a:?}");
        assert_eq!(a[0].plan_version, 1, "{parcel}");
        assert_eq!(a[0].route_id, route_of(driver), "{parcel}");
        assigned_to.insert(parcel.clone(), a[0].route_id.clone());
    }

    // Three more parcels for Oslo: a new plan version, most stops on the
    // van they had.
    let extra = manifest(
        "NO-OSL-X1,nordshop,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.92,10.76,doorstep,2,,
NO-OSL-X2,nordshop,NO,OSL-1,2026-11-23,Gate 2,0150,Oslo,59.93,10.74,doorstep,2,,
NO-OSL-X3,nordshop,NO,OSL-1,2026-11-23,Gate 3,0150,Oslo,59.90,10.77,in_home,2,12:00,15:00
",
    );
    load_manifest(server.planner(), "extra.csv", &extra).await;
    let mut only_oslo = request();
    only_oslo.depot_ids = vec!["OSL-1".into()];
    let second = planning
        .plan_day(only_oslo)
        .await
        .expect("replan")
        .into_inner();
    let oslo = &second.depots[0];
    assert_eq!((oslo.depot_id.as_str(), oslo.parcels), ("OSL-1", 33));
    assert!(oslo.routes_changed >= 1);
    assert_eq!(oslo.stops_kept_on_van + oslo.stops_moved, 30);
    assert!(
        oslo.stops_kept_on_van >= 20,
        "kept {} moved {}",
        oslo.stops_kept_on_van,
        oslo.stops_moved
    );
    let replanned = routes(&server, &first).await;
    assert_eq!(replanned.len(), 63);
    let kept = planned
        .iter()
        .filter(|(p, (driver, _))| p.starts_with("NO-OSL") && replanned[*p].0 == *driver)
        .count();
    assert_eq!(
        kept as u32, oslo.stops_kept_on_van,
        "GetRoute agrees with the reply"
    );
    // A parcel kept on its van gets no new assignment; one moved gets its
    // new route; the new ones get theirs.
    let mut moved = 0;
    for (parcel, (driver, _)) in &replanned {
        let a = assignments(&*log, parcel).await;
        let last = a.last().expect("assigned");
        assert_eq!(last.route_id, route_of(driver), "{parcel}: {a:?}");
        match assigned_to.get(parcel) {
            Some(before) if *before == last.route_id => assert_eq!(a.len(), 1, "{parcel}: {a:?}"),
            Some(_) => {
                assert_eq!(a.len(), 2, "{parcel}: {a:?}");
                moved += 1;
            }
            None => assert_eq!(a.len(), 1, "{parcel}: {a:?}"),
        }
    }
    assert_eq!(moved, oslo.stops_moved);

    // Bad requests say what is wrong.
    let mut unknown = request();
    unknown.depot_ids = vec!["TRD-9".into()];
    let e = planning.plan_day(unknown).await.expect_err("unknown depot");
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("TRD-9"));
    let mut fast = request();
    fast.objective = "fast".into();
    let e = planning.plan_day(fast).await.expect_err("objective");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("objective"));
}

/// The same day, planned repeatably on three fresh servers: the same
/// routes, times and figures every time, whatever else the machine does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeatable_plan_is_the_same_on_every_run() {
    let mut runs = Vec::new();
    for _ in 0..3 {
        let server = Sandbox::builder().fleets(fleets()).start().await;
        load_manifest(server.planner(), "no.csv", SAMPLE).await;
        let mut planning = PlanningServiceClient::new(server.planner());
        let reply = planning
            .plan_day(PlanDayRequest {
                generations: 200,
                seed: 5,
                ..request()
            })
            .await
            .expect("plan")
            .into_inner();
        for d in &reply.depots {
            assert!(d.unassigned.is_empty(), "{:?}", d.unassigned);
        }
        let figures: Vec<(String, u32, u64, u64)> = reply
            .depots
            .iter()
            .map(|d| {
                (
                    d.depot_id.clone(),
                    d.vans_used,
                    d.distance_m.to_bits(),
                    d.driving_s.to_bits(),
                )
            })
            .collect();
        runs.push((figures, routes(&server, &reply).await));
    }
    assert_eq!(runs[0].1.len(), 60);
    assert_eq!(runs[0], runs[1]);
    assert_eq!(runs[0], runs[2]);

    // A budget past the bound is refused, naming the field.
    let server = Sandbox::builder().fleets(fleets()).start().await;
    let e = PlanningServiceClient::new(server.planner())
        .plan_day(PlanDayRequest {
            generations: 1_000_000,
            ..request()
        })
        .await
        .expect_err("too many generations");
    assert!(e.message().contains("generations"), "{}", e.message());
}

/// A later day's plan carries an earlier day's open parcels over: the same
/// parcels, rescheduled and planned on the new day (an in-home window of
/// the old day no longer binds them), once; a carry-over from the day itself
/// or from too far back is refused, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_earlier_day_s_open_parcels_are_carried_over_to_a_later_day() {
    let server = Sandbox::builder().fleets(fleets()).start().await;
    load_manifest(server.planner(), "no.csv", SAMPLE).await;
    let mut planning = PlanningServiceClient::new(server.planner());
    planning.plan_day(request()).await.expect("plan the 23rd");

    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2026, 11, d).expect("date");
    let next = || PlanDayRequest {
        date: Some(date_to_proto(day(24))),
        carry_over_from: Some(date_to_proto(day(23))),
        ..request()
    };
    let reply = planning
        .plan_day(next())
        .await
        .expect("plan the 24th")
        .into_inner();
    let depots: BTreeSet<&str> = reply.depots.iter().map(|d| d.depot_id.as_str()).collect();
    assert_eq!(depots, BTreeSet::from(["BGO-1", "OSL-1"]));
    for d in &reply.depots {
        // Nothing was attempted on the 23rd: every parcel moves.
        assert_eq!((d.parcels, d.carried_over, d.returned), (30, 30, 0));
        assert!(d.unassigned.is_empty(), "{:?}", d.unassigned);
    }
    // The drivers of the 24th carry all 60, each once.
    let mut handheld = HandheldServiceClient::new(server.handheld());
    let mut carried = BTreeSet::new();
    for d in &reply.depots {
        for van in 0..d.vans_available {
            let got = handheld
                .get_route(GetRouteRequest {
                    driver_id: format!("{}-drv-{van:02}", d.depot_id),
                    date: Some(date_to_proto(day(24))),
                })
                .await
                .expect("route")
                .into_inner();
            for p in got
                .routes
                .into_iter()
                .flat_map(|r| r.stops)
                .flat_map(|s| s.parcel_ids)
            {
                assert!(carried.insert(p.clone()), "{p} twice");
            }
        }
    }
    assert_eq!(carried.len(), 60);
    // Each is on a route of the 24th by its own stream too: the 23rd's
    // assignment, then the 24th's.
    let log = server.log();
    for p in &carried {
        let routes: Vec<String> = assignments(&*log, p)
            .await
            .into_iter()
            .map(|a| a.route_id)
            .collect();
        assert_eq!(routes.len(), 2, "{p}: {routes:?}");
        assert!(routes[0].contains("-2026-11-23-"), "{p}: {routes:?}");
        assert!(routes[1].contains("-2026-11-24-"), "{p}: {routes:?}");
        // Every event a plan wrote on it carries the parcel's partner and
        // country, as its manifest did: partners' outcomes and webhooks
        // and a country's analyst pass events on by them (a parcel
        // returned by a carry-over is its partner's outcome).
        let stream: threshold_domain::StreamId = format!("parcel/{p}").parse().expect("a stream");
        let recorded = log.read_stream(&stream, 0, 100).await.expect("read");
        let partner = recorded[0].event.tenant.clone();
        assert!(partner.is_some(), "{p}: manifested without a partner");
        for r in &recorded {
            assert_eq!(
                (&r.event.tenant, r.event.country),
                (&partner, Some(threshold_domain::Country::No)),
                "{p}: {} at version {}",
                r.event.event_type,
                r.stream_version
            );
        }
    }

    // Carried once: the 23rd is empty now, and carrying it again moves nothing.
    let again = planning
        .plan_day(next())
        .await
        .expect("plan the 24th again")
        .into_inner();
    assert!(
        again
            .depots
            .iter()
            .all(|d| d.carried_over == 0 && d.parcels == 30)
    );
    let old = planning
        .plan_day(request())
        .await
        .expect("the 23rd")
        .into_inner();
    assert!(old.depots.is_empty(), "{:?}", old.depots);

    // From the day itself, or from more than a fortnight back: refused.
    for from in [day(24), day(9)] {
        let e = planning
            .plan_day(PlanDayRequest {
                carry_over_from: Some(date_to_proto(from)),
                ..next()
            })
            .await
            .expect_err("out of range");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("carry_over_from"), "{}", e.message());
    }
}

/// The sample day's route of `driver` (`<depot>-drv-NN` drives
/// `<depot>-<date>-NN`).
fn route_of(driver: &str) -> String {
    driver.replace("-drv-", "-2026-11-23-")
}

/// The events of `parcel`'s stream that say a plan left it out.
async fn left_out(
    log: &dyn threshold_log::EventLog,
    parcel: &str,
) -> Vec<threshold_domain::pb::ParcelLeftOut> {
    threshold_testkit::fixtures::parcel_history(log, parcel)
        .await
        .into_iter()
        .filter_map(|e| match e {
            threshold_domain::pb::parcel_event::Event::LeftOut(l) => Some(l),
            _ => None,
        })
        .collect()
}

/// The events of `parcel`'s stream that say a plan put it on a route.
async fn assignments(
    log: &dyn threshold_log::EventLog,
    parcel: &str,
) -> Vec<threshold_domain::pb::ParcelAssignedToRoute> {
    threshold_testkit::fixtures::parcel_history(log, parcel)
        .await
        .into_iter()
        .filter_map(|e| match e {
            threshold_domain::pb::parcel_event::Event::AssignedToRoute(a) => Some(a),
            _ => None,
        })
        .collect()
}

/// A parcel heavier than any van and an in-home window before every shift
/// are left out with the planner's reason, and that reason is in the log
/// (once, however often the day is planned) and in the depot-day model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parcel_left_out_has_the_planner_s_reason_in_the_log() {
    let server = Sandbox::builder().fleets(fleets()).start().await;
    let rows = manifest(
        "NO-OSL-A1,nordshop,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.92,10.76,doorstep,2,,
NO-OSL-H1,nordshop,NO,OSL-1,2026-11-23,Gate 2,0150,Oslo,59.93,10.74,doorstep,400,,
NO-OSL-W1,nordshop,NO,OSL-1,2026-11-23,Gate 3,0150,Oslo,59.90,10.77,in_home,2,05:00,06:00
",
    );
    load_manifest(server.planner(), "left-out.csv", &rows).await;
    let mut planning = PlanningServiceClient::new(server.planner());
    let reply = planning
        .plan_day(request())
        .await
        .expect("plan")
        .into_inner();
    let oslo = &reply.depots[0];
    let reasons: BTreeMap<&str, &str> = oslo
        .unassigned
        .iter()
        .map(|u| (u.parcel_id.as_str(), u.reason.as_str()))
        .collect();
    assert_eq!(
        reasons.keys().copied().collect::<Vec<_>>(),
        ["NO-OSL-H1", "NO-OSL-W1"]
    );
    assert!(
        reasons["NO-OSL-H1"].contains("more than any"),
        "{reasons:?}"
    );
    assert!(reasons["NO-OSL-W1"].contains("window"), "{reasons:?}");

    let log = server.log();
    let date = request().date;
    for (parcel, reason) in &reasons {
        let events = left_out(&*log, parcel).await;
        assert_eq!(events.len(), 1, "{parcel}: {events:?}");
        assert_eq!(events[0].reason, *reason);
        assert_eq!(events[0].delivery_date, date);
        assert!(events[0].planned_at.is_some());
    }
    assert!(left_out(&*log, "NO-OSL-A1").await.is_empty());

    // Planned again with the same result: nothing more in the log.
    let again = planning
        .plan_day(request())
        .await
        .expect("plan again")
        .into_inner();
    assert_eq!(again.depots[0].unassigned, oslo.unassigned);
    for parcel in reasons.keys() {
        assert_eq!(left_out(&*log, parcel).await.len(), 1, "{parcel}");
    }

    // The depot-day model, folded from the log, has the same reasons.
    let mut days = threshold_projections::DepotDays::default();
    for e in log
        .read_all(threshold_log::Position::ORIGIN, 10_000)
        .await
        .expect("log")
    {
        days.apply(&e);
    }
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date");
    let kept: BTreeMap<String, Option<String>> = days
        .parcels("OSL-1", day)
        .into_iter()
        .map(|p| {
            (
                p.parcel_id.clone(),
                p.left_out.as_ref().map(|l| l.reason.clone()),
            )
        })
        .collect();
    assert_eq!(kept["NO-OSL-A1"], None);
    for (parcel, reason) in &reasons {
        assert_eq!(kept[*parcel].as_deref(), Some(*reason), "{parcel}");
    }
}

/// Plans called off mid-solve do not pile solves up: each keeps the one
/// planning turn until its solve ends, so however many calls a planner
/// makes and cancels, one plan is solved at a time, and the next call
/// gets its plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_called_off_mid_solve_are_solved_one_at_a_time() {
    let server = Sandbox::builder().fleets(fleets()).start().await;
    load_manifest(server.planner(), "no.csv", SAMPLE).await;
    let slow = || PlanDayRequest {
        seconds_per_depot: 1.5,
        ..request()
    };
    for _ in 0..4 {
        let mut planning = PlanningServiceClient::new(server.planner());
        // Called off once its solve has begun.
        let called_off = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            planning.plan_day(slow()),
        )
        .await;
        assert!(called_off.is_err(), "a 1.5 s plan answered within 0.3 s");
    }
    let planning = server.planning();
    let mut most = 0;
    for _ in 0..30 {
        most = most.max(planning.solving());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        most <= 1,
        "{most} solves at once after four calls called off"
    );
    // The next plan is made, after those solves.
    PlanningServiceClient::new(server.planner())
        .plan_day(request())
        .await
        .expect("planned");
    assert_eq!(planning.solving(), 0);
}
