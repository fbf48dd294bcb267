//! A planner's depot-day page over real HTTP on 127.0.0.1, its models
//! following an embedded log written through the aggregates: a parcel a
//! plan left out shows the planner's reason from the log, escaped; a
//! parcel with none shows what the page infers.

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{NaiveDate, Utc};
use threshold_auth::{Authenticator, Credentials, Role};
use threshold_console::{Console, Models};
use threshold_domain::country::date_to_proto;
use threshold_domain::parcel::{Command as ParcelCommand, Parcel};
use threshold_domain::route::{Command as RouteCommand, Route};
use threshold_domain::{DepotId, DriverId, EventId, ParcelId, RouteId, StreamId, VehicleId, pb};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, decide};
use threshold_privacy::Vault;
use threshold_routing::depot::Fleets;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// GETs `path` with `cookie`; the status and the body.
async fn get(addr: SocketAddr, path: &str, cookie: Option<&str>) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    // As a browser navigates: the sign-in link as one opened from
    // another application, the pages as ones typed in.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{cookie}Sec-Fetch-Site: none\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw).await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
}

async fn manifest(log: &dyn EventLog, parcel: &str, position: Option<pb::GeoPoint>) {
    let m = pb::ParcelManifested {
        parcel_id: parcel.into(),
        partner_id: "nordshop".into(),
        country: pb::Country::Se as i32,
        depot_id: "STO-1".into(),
        delivery_date: Some(date_to_proto(day())),
        address: Some(pb::Address {
            street: "Drottninggatan 1".into(),
            postal_code: "111 51".into(),
            city: "Stockholm".into(),
            position,
        }),
        service: pb::Service::Doorstep as i32,
        weight_grams: 1200,
        ..Default::default()
    };
    on_parcel(log, parcel, ParcelCommand::Manifest(Box::new(m))).await;
}

async fn on_parcel(log: &dyn EventLog, parcel: &str, command: ParcelCommand) {
    let stream = StreamId::parcel(&ParcelId::new(parcel).expect("id"));
    decide::<Parcel>(log, &stream, &command, |_| (EventId::new(), Utc::now()))
        .await
        .expect("parcel command");
}

#[tokio::test]
async fn a_parcel_left_out_shows_the_planner_s_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token =
        Credentials::add(dir.path(), "planner-sto", Role::Planner, "STO-1").expect("credential");
    let log = EmbeddedLog::open(dir.path().join("log"), EmbeddedOptions::default()).expect("log");
    let log: Arc<dyn EventLog> = Arc::new(log);
    let at = Some(pb::GeoPoint {
        latitude: 59.33,
        longitude: 18.06,
    });
    // SE-1 on a route, SE-2 left out by that plan, SE-3 with no position
    // and no reason of the planner's.
    for p in ["SE-1", "SE-2"] {
        manifest(&*log, p, at).await;
    }
    manifest(&*log, "SE-3", None).await;
    let route = RouteId::new("STO-1-2026-11-23-van-00").expect("route");
    decide::<Route>(
        &*log,
        &StreamId::route(&route),
        &RouteCommand::Plan {
            route_id: route.clone(),
            depot_id: DepotId::new("STO-1").expect("depot"),
            local_date: day(),
            vehicle_id: VehicleId::new("STO-1-van-00").expect("van"),
            driver_id: DriverId::new("STO-1-drv-00").expect("driver"),
            stops: vec![pb::PlannedStop {
                index: 0,
                parcel_ids: vec!["SE-1".into()],
                position: at,
                ..Default::default()
            }],
            reason: "planned".into(),
        },
        |_| (EventId::new(), Utc::now()),
    )
    .await
    .expect("route");
    let reason = "2000000 g, 0 cm³ is more than any van carries <b>";
    on_parcel(
        &*log,
        "SE-2",
        ParcelCommand::LeaveOut {
            date: day(),
            reason: reason.into(),
            planned_at: Utc::now(),
            placed_since: false,
        },
    )
    .await;

    let vault = Arc::new(Vault::open(dir.path().join("vault")).expect("vault"));
    let fleets = Fleets::from_json("depots.json", include_str!("../../../config/depots.json"))
        .expect("fleets");
    let models = Models::follow(Arc::clone(&log), vault);
    let head = log.head().await.expect("head");
    let within = std::time::Duration::from_secs(10);
    for lag in [
        threshold_projections::caught_up(&models.routes, head, within).await,
        threshold_projections::caught_up(&models.depot_days, head, within).await,
    ] {
        lag.expect("the models catch up");
    }
    let console = Console::new(models, fleets, Authenticator::new(dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (addr, _task) = console
        .clone()
        .spawn(listener, std::future::pending())
        .expect("serve");
    let path = console.sign_in_path_for_token(&token).expect("known token");
    let (status, head, _) = get(addr, &path, None).await;
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie:")
                .then(|| l["set-cookie:".len()..].trim().to_owned())
        })
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .expect("a session cookie");

    let (status, _, page) = get(addr, "/depot/STO-1?date=2026-11-23", Some(&cookie)).await;
    assert_eq!(status, 200, "{page}");
    let row = |p: &str| {
        let start = page
            .find(&format!("<tr><td>{p}</td><td"))
            .unwrap_or_else(|| panic!("{p} is not listed unplanned: {page}"));
        let end = page[start..].find("</tr>").expect("row end");
        page[start..start + end].to_owned()
    };
    assert!(
        row("SE-2").contains(
            "data-why=planner>2000000 g, 0 cm³ is more than any van carries &lt;b&gt;</td>"
        ),
        "{}",
        row("SE-2")
    );
    assert!(!page.contains("carries <b>"), "the reason is escaped");
    let inferred = row("SE-3");
    assert!(inferred.contains("no position"), "{inferred}");
    assert!(!inferred.contains("data-why=planner"), "{inferred}");
    assert!(!page.contains("<tr><td>SE-1</td><td"), "SE-1 is on a route");
    assert!(page.contains("<b data-kpi=unplanned>2</b>"), "{page}");
}
