//! A small day through the real services on 127.0.0.1:0 — manifest load,
//! handheld attempts, analytics report — checked against hand-computed values.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::Utc;
use threshold_analytics_service::Analytics;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{
    AttemptFailedReport, AttemptsReportRequest, AttemptsRow, DeliveredReport, HandheldEvent,
};
use threshold_auth::{AuthLayer, Authed, Authenticator, LocalTokens, Role};
use threshold_domain::country::timestamp;
use threshold_domain::{EventId, pb};
use threshold_handheld_service::Handhelds;
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog};
use threshold_manifest_service::{Manifests, client};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Server};

/// A connection as each role a test plays, with the local credentials a
/// first serve makes in `dir`.
#[derive(Clone)]
#[allow(dead_code)]
struct Conn {
    planner: Authed,
    handheld: Authed,
    analyst: Authed,
    plain: Channel,
}

impl Conn {
    fn new(channel: Channel, dir: &std::path::Path) -> Self {
        let tokens = LocalTokens::load(dir).expect("tokens");
        let as_role = |role| tokens.channel(channel.clone(), role).expect("token");
        Self {
            planner: as_role(Role::Planner),
            handheld: as_role(Role::Handheld),
            analyst: as_role(Role::Analyst),
            plain: channel,
        }
    }
}

async fn serve(dir: &std::path::Path) -> SocketAddr {
    let log: Arc<dyn EventLog> =
        Arc::new(EmbeddedLog::open(dir, EmbeddedOptions::default()).expect("log"));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    LocalTokens::ensure(dir).expect("credentials");
    let router = Server::builder()
        .layer(AuthLayer::new(Authenticator::new(dir)))
        .add_service(
            Manifests::new(
                Arc::clone(&log),
                Arc::new(threshold_privacy::Vault::open(dir).expect("vault")),
            )
            .into_server(),
        )
        .add_service(Handhelds::new(Arc::clone(&log)).into_server())
        .add_service(Analytics::start(log).into_server());
    tokio::spawn(async move {
        router
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .expect("server");
    });
    addr
}

const MANIFEST: &str = "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end
SE-1,nordshop,SE,STO-1,2026-11-23,Gatan 1,111 51,Stockholm,59.33,18.06,doorstep,1,,
SE-2,nordshop,SE,STO-1,2026-11-23,Gatan 2,111 51,Stockholm,59.33,18.06,in_home,1,09:00,12:00
FI-1,kotimarket,FI,HEL-1,2026-11-23,Katu 1,00100,Helsinki,60.17,24.94,doorstep,1,,
NO-1,fjallgear,NO,OSL-1,2026-11-23,Gate 1,0150,Oslo,59.91,10.75,locker,1,,
";

fn event(parcel: &str, report: Report) -> HandheldEvent {
    HandheldEvent {
        event_id: EventId::new().to_string(),
        device_id: "hh-1".into(),
        sequence: 0,
        parcel_id: parcel.into(),
        driver_id: "drv-1".into(),
        route_id: String::new(),
        occurred_at: Some(timestamp(Utc::now())),
        report: Some(report),
    }
}

fn failed(reason: pb::FailureReason) -> Report {
    Report::Failed(AttemptFailedReport {
        reason: reason as i32,
        note: String::new(),
    })
}

fn delivered(method: pb::DeliveryMethod, grant: &str) -> Report {
    Report::Delivered(DeliveredReport {
        method: method as i32,
        grant_id: grant.into(),
        position: None,
    })
}

fn row<'a>(rows: &'a [AttemptsRow], group: &str) -> &'a AttemptsRow {
    rows.iter()
        .find(|r| r.group == group)
        .unwrap_or_else(|| panic!("no {group}"))
}

#[tokio::test]
async fn a_small_day_reports_attempts_per_parcel_as_computed_by_hand() {
    let dir = tempfile::tempdir().expect("dir");
    let addr = serve(dir.path()).await;
    let channel = Conn::new(
        Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
        dir.path(),
    );

    let summary = client::load(
        &mut ManifestServiceClient::new(channel.planner.clone()),
        "day.csv",
        std::io::Cursor::new(MANIFEST.as_bytes().to_vec()),
        |r| panic!("unexpected rejection {r:?}"),
    )
    .await
    .expect("load");
    assert_eq!(summary.accepted, 4);

    use pb::{DeliveryMethod as M, FailureReason as F};
    let day = vec![
        event("SE-1", failed(F::NotHome)),
        event("SE-1", delivered(M::Doorstep, "")),
        // An in-home parcel delivered by its grant's fallback.
        event("SE-2", delivered(M::Neighbour, "")),
        event("FI-1", failed(F::NotHome)),
        event("FI-1", failed(F::Refused)),
    ];
    let mut acks = HandheldServiceClient::new(channel.handheld.clone())
        .stream_attempts(tokio_stream::iter(day))
        .await
        .expect("stream")
        .into_inner();
    let mut last = 0;
    while let Some(ack) = acks.message().await.expect("ack") {
        assert!(ack.error.is_empty(), "{}", ack.error);
        last = last.max(ack.position);
    }

    let mut analytics = AnalyticsServiceClient::new(channel.analyst.clone());
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
    let token = threshold_auth::Credentials::add(dir.path(), "sto", Role::Planner, "STO-1")
        .expect("credential");
    let mut planner = AnalyticsServiceClient::new(
        threshold_auth::authed(channel.plain.clone(), Some(&token)).expect("token"),
    );
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
