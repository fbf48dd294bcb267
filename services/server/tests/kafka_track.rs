//! Track and trace on Kafka: one process loads and plans a day, another
//! runs only the outcomes and answers track and trace from its own replica
//! (its own positions, its own store), and goes on after a restart. Needs the test broker (`THRESHOLD_TEST_KAFKA`).

use std::collections::BTreeMap;
use std::time::Duration;

use threshold_api::v1::outcome_service_client::OutcomeServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{PlanDayRequest, TrackDayRequest, TrackRequest};
use threshold_auth::Role;
use threshold_domain::country::date_to_proto;
use threshold_domain::{Country, EventId};
use threshold_routing::depot::{Fleet, Fleets};
use threshold_testkit::fixtures::{load_manifest, manifest};
use threshold_testkit::{Sandbox, Service};

fn brokers() -> String {
    std::env::var("THRESHOLD_TEST_KAFKA").unwrap_or_else(|_| {
        panic!("THRESHOLD_TEST_KAFKA is not set: `make test` starts a broker on loopback")
    })
}

async fn process(
    name: &str,
    prefix: &str,
    vault: &std::path::Path,
    services: &[Service],
) -> Sandbox {
    Sandbox::builder()
        // Vans of 300 kg: a 400 kg parcel is left out.
        .fleets(Fleets {
            default: Fleet {
                vans: 2,
                in_home_cleared: 1,
                capacity_kg: 300.0,
                ..Fleet::default()
            },
            depots: BTreeMap::new(),
        })
        .kafka(brokers())
        .name(name)
        .topic_prefix(prefix)
        .partitions(3)
        .vault(vault)
        .services(services.iter().copied())
        .start()
        .await
}

fn day() -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
}

/// Oslo's parcels of the day as the tracking process lists them, once it
/// holds `n` of them with `left` left out and `on_route` on a route.
async fn listed(
    track: &Sandbox,
    n: usize,
    left: usize,
    on_route: usize,
) -> BTreeMap<String, String> {
    let mut client = OutcomeServiceClient::new(track.client_as(Role::Planner, "OSL-1"));
    let mut last = BTreeMap::new();
    for _ in 0..400 {
        let page = client
            .track_day(TrackDayRequest {
                country: Country::No.to_proto() as i32,
                depot_id: "OSL-1".into(),
                delivery_date: Some(date_to_proto(day())),
                ..Default::default()
            })
            .await
            .expect("the day")
            .into_inner();
        last = page
            .parcels
            .into_iter()
            .map(|p| (p.parcel_id, p.status))
            .collect();
        let count = |status: &str| last.values().filter(|s| *s == status).count();
        if last.len() == n && count("left_out") == left && count("on_route") == on_route {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the tracking process never listed {n} parcels, {left} left out, {on_route} on a route: {last:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_running_only_outcomes_tracks_what_another_loaded_and_planned() {
    let prefix = format!("track{}", EventId::new().uuid().simple());
    let vault = tempfile::tempdir().expect("dir");
    let plan = process(
        "plan",
        &prefix,
        vault.path(),
        &[Service::Manifest, Service::Planning],
    )
    .await;
    let track = process("track", &prefix, vault.path(), &[Service::Outcomes]).await;
    let rows = manifest(
        "NO-OSL-A1,nordshop,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.92,10.76,doorstep,2,,
NO-OSL-H1,nordshop,NO,OSL-1,2026-11-23,Gate 2,0150,Oslo,59.93,10.74,doorstep,400,,
",
    );
    load_manifest(plan.planner(), "oslo.csv", &rows).await;
    let reply = PlanningServiceClient::new(plan.planner())
        .plan_day(PlanDayRequest {
            date: Some(date_to_proto(day())),
            seconds_per_depot: 0.3,
            ..Default::default()
        })
        .await
        .expect("plan")
        .into_inner();
    let left: Vec<&str> = reply
        .depots
        .iter()
        .flat_map(|d| d.unassigned.iter().map(|u| u.parcel_id.as_str()))
        .collect();
    assert_eq!(left, ["NO-OSL-H1"], "{reply:?}");
    let seen = listed(&track, 2, 1, 1).await;
    assert_eq!(seen["NO-OSL-A1"], "on_route");
    assert_eq!(seen["NO-OSL-H1"], "left_out");
    let h1 = OutcomeServiceClient::new(track.partner("nordshop"))
        .track(TrackRequest {
            parcel_id: "NO-OSL-H1".into(),
        })
        .await
        .expect("tracked")
        .into_inner();
    let steps: Vec<&str> = h1.steps.iter().map(|s| s.milestone.as_str()).collect();
    assert_eq!(steps, ["manifested", "left_out"]);

    // Restarted on its data directory (its replica and its store), the
    // tracking process tracks a parcel loaded while it was down, and lists
    // nothing twice.
    let data = track.stop_keeping_data().await;
    let more = manifest(
        "NO-OSL-B1,nordshop,NO,OSL-1,2026-11-23,Gate 5,0150,Oslo,59.92,10.75,doorstep,2,,
",
    );
    load_manifest(plan.planner(), "more.csv", &more).await;
    let again = Sandbox::builder()
        .kafka(brokers())
        .name("track")
        .topic_prefix(&prefix)
        .partitions(3)
        .vault(vault.path())
        .services([Service::Outcomes])
        .in_dir(data)
        .start()
        .await;
    // Its store, kept in its data directory beside its replica, went on.
    let seen = listed(&again, 3, 1, 1).await;
    assert_eq!(seen["NO-OSL-A1"], "on_route");
    assert_eq!(seen["NO-OSL-B1"], "manifested");
}
