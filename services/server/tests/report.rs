//! A small day through the production server on 127.0.0.1:0 — manifest load,
//! handheld attempts, analytics report — checked against hand-computed values.

use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{AttemptsReportRequest, AttemptsRow};
use threshold_auth::Role;
use threshold_domain::pb;
use threshold_manifest_service::client;
use threshold_testkit::Sandbox;
use threshold_testkit::fixtures::{
    delivered_by as delivered, failed, handheld_event as event, manifest, planned,
};

/// Four parcels in three countries; SE-2 in-home.
fn day_manifest() -> String {
    manifest(
        "SE-1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,
SE-2,nordshop,SE,STO-1,2026-11-23,Gatan 2,111 51,Stockholm,59.33,18.06,in_home,1,09:00,12:00
FI-1,kotimarket,FI,HEL-1,2026-11-23,Katu 1,00100,Helsinki,60.17,24.94,doorstep,1,,
NO-1,fjallgear,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.91,10.75,locker,1,,
",
    )
}

fn row<'a>(rows: &'a [AttemptsRow], group: &str) -> &'a AttemptsRow {
    rows.iter()
        .find(|r| r.group == group)
        .unwrap_or_else(|| panic!("no {group}"))
}

#[tokio::test]
async fn a_small_day_reports_attempts_per_parcel_as_computed_by_hand() {
    let server = Sandbox::start().await;

    let summary = client::load(
        &mut ManifestServiceClient::new(server.planner()),
        "day.csv",
        std::io::Cursor::new(day_manifest().into_bytes()),
        |r| panic!("unexpected rejection {r:?}"),
    )
    .await
    .expect("load");
    assert_eq!(summary.accepted, 4);
    // On the route of the handheld events' driver.
    planned(
        server.log().as_ref(),
        "r-1",
        "drv-1",
        &["SE-1", "SE-2", "FI-1", "NO-1"],
    )
    .await;

    use pb::{DeliveryMethod as M, FailureReason as F};
    let day = vec![
        event("SE-1", failed(F::NotHome)),
        event("SE-1", delivered(M::Doorstep, "")),
        // An in-home parcel delivered by its grant's fallback.
        event("SE-2", delivered(M::Neighbour, "")),
        event("FI-1", failed(F::NotHome)),
        event("FI-1", failed(F::Refused)),
    ];
    let mut acks = HandheldServiceClient::new(server.handheld())
        .stream_attempts(tokio_stream::iter(day))
        .await
        .expect("stream")
        .into_inner();
    let mut last = 0;
    while let Some(ack) = acks.message().await.expect("ack") {
        assert!(ack.error.is_empty(), "{}", ack.error);
        last = last.max(ack.position);
    }

    let mut analytics = AnalyticsServiceClient::new(server.analyst());
    let ask = |by: &str| AttemptsReportRequest {
        by: by.into(),
        at_least_position: last,
        ..Default::default()
    };
    let r = analytics
        .attempts_report(ask("country"))
        .await
        .expect("report")
        .into_inner();
    assert!(r.position >= last);
    let se = row(&r.rows, "SE");
    assert_eq!((se.parcels, se.attempted, se.attempts), (2, 2, 3));
    assert_eq!(
        (
            se.attempts_per_parcel,
            se.first_attempt_success_rate,
            se.repeat_attempt_rate
        ),
        (1.5, 0.5, 0.5)
    );
    let fi = row(&r.rows, "FI");
    assert_eq!(
        (
            fi.attempts,
            fi.attempts_per_parcel,
            fi.first_attempt_success_rate,
            fi.delivered
        ),
        (2, 2.0, 0.0, 0)
    );
    let no = row(&r.rows, "NO");
    assert_eq!((no.parcels, no.attempted), (1, 0));
    let total = r.total.expect("total");
    assert_eq!(
        (
            total.parcels,
            total.attempted,
            total.attempts,
            total.delivered
        ),
        (4, 3, 5, 2)
    );
    assert!((total.attempts_per_parcel - 5.0 / 3.0).abs() < 1e-9);
    assert!((total.first_attempt_success_rate - 1.0 / 3.0).abs() < 1e-9);

    let r = analytics
        .attempts_report(ask("reason"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(row(&r.rows, "not_home").attempts, 2);
    assert_eq!(row(&r.rows, "refused").attempts, 1);

    let r = analytics
        .attempts_report(ask("service"))
        .await
        .expect("report")
        .into_inner();
    assert_eq!(row(&r.rows, "in_home").first_attempt_success_rate, 1.0);
    assert_eq!(row(&r.rows, "doorstep").attempts_per_parcel, 2.0);

    let bad = analytics
        .attempts_report(ask("colour"))
        .await
        .expect_err("bad dimension");
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(
        bad.message().contains("by: \"colour\" is not one of"),
        "{}",
        bad.message()
    );

    // A depot's planner sees its own depot only.
    let mut planner = AnalyticsServiceClient::new(server.client_as(Role::Planner, "STO-1"));
    let r = planner
        .attempts_report(ask("depot"))
        .await
        .expect("report")
        .into_inner();
    let depots: Vec<&str> = r.rows.iter().map(|r| r.group.as_str()).collect();
    assert_eq!(depots, ["STO-1"]);
    let mut other = ask("depot");
    other.depot_id = "HEL-1".into();
    let err = planner
        .attempts_report(other)
        .await
        .expect_err("not theirs");
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}
