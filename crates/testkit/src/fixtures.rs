//! The requests, facts and manifests tests start from: a grant whose window
//! is open now, an unlock request from beside the door, the home's signed
//! devices, its enrolment and claim, the facts other services would have
//! recorded, small manifests, the route plans handheld events need, and
//! handheld events.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use threshold_access_service::device::{Signed, SigningKey, key_from_seed, public_key};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{
    AttemptAck, AttemptFailedReport, AttemptStartedReport, AuthorizeUnlockRequest, ClaimHomeReply,
    ClaimHomeRequest, DeliveredReport, DeviceEventRequest, GetRouteRequest, HandheldEvent,
    IssueGrantRequest, PlanDayRequest,
};
use threshold_auth::Authed;
use threshold_domain::country::{date_to_proto, timestamp};
use threshold_domain::{Country, DomainEvent, EventId, ParcelId, StreamId, pb};
use threshold_log::{EventLog, ExpectedVersion, NewEvent};

/// The header of a manifest CSV.
pub const MANIFEST_HEADER: &str = "parcel_id,partner_id,country,depot_id,delivery_date,address,postal_code,city,latitude,longitude,service,weight_kg,window_start,window_end";

/// A manifest CSV of `rows` (each a line, newline-terminated) under the header.
pub fn manifest(rows: &str) -> String {
    format!("{MANIFEST_HEADER}\n{rows}")
}

/// Loads `csv` as manifest `name` through the ManifestService, as
/// `planner`; any rejected row fails the test.
pub async fn load_manifest(planner: Authed, name: &str, csv: &str) {
    threshold_manifest_service::client::load(
        &mut ManifestServiceClient::new(planner),
        name,
        std::io::Cursor::new(csv.as_bytes().to_vec()),
        |r| panic!("unexpected rejection {r:?}"),
    )
    .await
    .expect("load");
}

/// Parcels manifested for nordshop's Stockholm depot on 2026-11-23,
/// appended to `log` as they are (no address).
pub async fn manifested(log: &dyn EventLog, parcels: &[&str]) {
    for id in parcels {
        let m = pb::ParcelManifested {
            parcel_id: (*id).into(),
            partner_id: "nordshop".into(),
            country: pb::Country::Se as i32,
            depot_id: "STO-1".into(),
            delivery_date: Some(date_to_proto(
                NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            )),
            address: None,
            service: pb::Service::Doorstep as i32,
            weight_grams: 1000,
            in_home_window: None,
            manifest_id: "m".into(),
            manifest_line: 2,
            sealed_address: None,
            address_digest: Vec::new(),
        };
        let stream = StreamId::parcel(&ParcelId::new(*id).expect("id"));
        let e = NewEvent::new(
            EventId::new(),
            &DomainEvent::Parcel(pb::parcel_event::Event::Manifested(m)),
            Utc::now(),
        )
        .country(Country::Se);
        log.append(&stream, ExpectedVersion::NO_STREAM, vec![e])
            .await
            .expect("manifest");
    }
}

/// The day [`manifested`] and [`planned`] parcels are due on: 2026-11-23.
pub fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 23).expect("date")
}

/// Route `route` of `driver` from nordshop's Stockholm depot on [`day`],
/// planned with a stop per parcel, appended to `log` as the planning
/// service would (plan version 1): the driver's handheld may report on
/// them. Handheld events on a parcel no plan names are refused.
pub async fn planned(log: &dyn EventLog, route: &str, driver: &str, parcels: &[&str]) {
    let stops = parcels
        .iter()
        .zip(0..)
        .map(|(p, index)| pb::PlannedStop {
            index,
            parcel_ids: vec![(*p).into()],
            ..Default::default()
        })
        .collect();
    let plan = pb::route_event::Event::Planned(pb::RoutePlanned {
        route_id: route.into(),
        depot_id: "STO-1".into(),
        local_date: Some(date_to_proto(day())),
        vehicle_id: format!("van-{route}"),
        driver_id: driver.into(),
        plan_version: 1,
        stops,
    });
    facts(
        log,
        &format!("route/{route}"),
        vec![DomainEvent::Route(plan)],
        Utc::now(),
    )
    .await;
}

/// [`manifested`] parcels on route `route` of `driver` ([`planned`]).
pub async fn manifested_on_route(log: &dyn EventLog, route: &str, driver: &str, parcels: &[&str]) {
    manifested(log, parcels).await;
    planned(log, route, driver, parcels).await;
}

/// Plans `date`'s routes through PlanningService as `planner` (a short
/// search), and reads each driver's route back through
/// HandheldService.GetRoute as `handheld`: every planned parcel with its
/// driver. Parcels no van could take are left out.
pub async fn plan_day(
    planner: Authed,
    handheld: Authed,
    date: NaiveDate,
) -> std::collections::BTreeMap<String, String> {
    let reply = PlanningServiceClient::new(planner)
        .plan_day(PlanDayRequest {
            date: Some(date_to_proto(date)),
            depot_ids: Vec::new(),
            seconds_per_depot: 0.2,
            objective: String::new(),
            ..Default::default()
        })
        .await
        .expect("plan the day")
        .into_inner();
    let mut handheld = HandheldServiceClient::new(handheld);
    let mut drivers = std::collections::BTreeMap::new();
    for depot in &reply.depots {
        for van in 0..depot.vans_available {
            let driver = threshold_routing::depot::driver_id(&depot.depot_id, van as usize);
            let routes = handheld
                .get_route(GetRouteRequest {
                    driver_id: driver.clone(),
                    date: Some(date_to_proto(date)),
                })
                .await
                .expect("a driver's route")
                .into_inner()
                .routes;
            for stop in routes.into_iter().flat_map(|r| r.stops) {
                for p in stop.parcel_ids {
                    drivers.insert(p, driver.clone());
                }
            }
        }
    }
    drivers
}

/// A handheld event of driver drv-1's device hh-1 about `parcel`, now,
/// sequence 0, naming no route; tests change what they need. The parcel
/// must be on a route of the event's driver ([`planned`]) to be accepted.
pub fn handheld_event(parcel: &str, report: Report) -> HandheldEvent {
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

/// A handheld's open attempt stream: events go out on `tx`, the server's
/// acknowledgements come back on `acks`, in order.
pub struct HandheldStream {
    /// Where events are sent.
    pub tx: tokio::sync::mpsc::Sender<HandheldEvent>,
    /// The server's acknowledgements.
    pub acks: tonic::Streaming<AttemptAck>,
}

impl HandheldStream {
    /// Opens `StreamAttempts` on `channel`.
    pub async fn open(channel: Authed) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let acks = HandheldServiceClient::new(channel)
            .stream_attempts(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("stream")
            .into_inner();
        Self { tx, acks }
    }

    /// Sends `e` and waits for its acknowledgement.
    pub async fn send(&mut self, e: &HandheldEvent) -> AttemptAck {
        self.tx.send(e.clone()).await.expect("send");
        self.acks.message().await.expect("ack").expect("an ack")
    }
}

/// An attempt started.
pub fn started() -> Report {
    Report::Started(AttemptStartedReport {})
}

/// Delivered by `method`, under `grant` (empty: none).
pub fn delivered_by(method: pb::DeliveryMethod, grant: &str) -> Report {
    Report::Delivered(DeliveredReport {
        method: method as i32,
        grant_id: grant.into(),
        position: None,
    })
}

/// Delivered at the doorstep.
pub fn delivered() -> Report {
    delivered_by(pb::DeliveryMethod::Doorstep, "")
}

/// An attempt failed for `reason`.
pub fn failed(reason: pb::FailureReason) -> Report {
    Report::Failed(AttemptFailedReport {
        reason: reason as i32,
        note: String::new(),
    })
}

/// An attempt failed: nobody home.
pub fn not_home() -> Report {
    failed(pb::FailureReason::NotHome)
}

/// A grant for home-1's parcel SE-1, to driver drv-1 on route r-1, whose
/// window (Stockholm local time) is open now.
pub fn grant(id: &str) -> IssueGrantRequest {
    let local = |d: Duration| {
        (Utc::now() + d)
            .with_timezone(&Country::Se.tz())
            .format("%Y-%m-%dT%H:%M")
            .to_string()
    };
    IssueGrantRequest {
        grant_id: id.into(),
        home_id: "home-1".into(),
        parcel_ids: vec!["SE-1".into()],
        resident_ref: "res-1".into(),
        country: pb::Country::Se as i32,
        window_start_local: local(Duration::hours(-1)),
        window_end_local: local(Duration::hours(1)),
        scope: Some(threshold_domain::grant::courier_scope("drv-1", "r-1")),
        geofence: Some(threshold_domain::grant::geofence(
            threshold_domain::geo::point(59.33, 18.06),
            50,
        )),
        conditions: Some(pb::HouseholdConditions::default()),
        fallback: pb::Fallback::Locker as i32,
    }
}

/// `driver`'s request to unlock under `grant` for SE-1, 11 m from the door.
pub fn unlock(grant: &str, driver: &str) -> AuthorizeUnlockRequest {
    AuthorizeUnlockRequest {
        grant_id: grant.into(),
        parcel_id: "SE-1".into(),
        driver_id: driver.into(),
        route_id: "r-1".into(),
        // 11 m from the door.
        position: Some(pb::GeoPoint {
            latitude: 59.3301,
            longitude: 18.06,
        }),
        pet_acknowledged: false,
    }
}

/// The home's device key.
pub fn key() -> SigningKey {
    key_from_seed([7; 32])
}

/// A device event for home-1 at `at`, signed with `key`.
pub fn device(
    event: pb::home_event::Event,
    at: DateTime<Utc>,
    key: &SigningKey,
) -> DeviceEventRequest {
    let mut r = DeviceEventRequest {
        event_id: EventId::new().to_string(),
        home_id: "home-1".into(),
        occurred_at: Some(timestamp(at)),
        event: Some(pb::HomeEvent {
            event: Some(event),
            prev_hash: vec![],
        }),
        signature: vec![],
    };
    r.sign(key);
    r
}

/// Facts appended as they are, for what other services would have recorded.
pub async fn facts(log: &dyn EventLog, stream: &str, events: Vec<DomainEvent>, at: DateTime<Utc>) {
    let stream: StreamId = stream.parse().expect("stream");
    let new = events
        .iter()
        .map(|e| NewEvent::new(EventId::new(), e, at))
        .collect();
    log.append(&stream, ExpectedVersion::Any, new)
        .await
        .expect("append");
}

/// The types of a stream's events (`parcel/SE-1`, `grant/g-1`), in order.
pub async fn event_types(log: &dyn EventLog, stream: &str) -> Vec<String> {
    log.read_stream(&stream.parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .map(|r| r.event.event_type)
        .collect()
}

/// home-1's postal address, in Stockholm: where SE-1 is addressed.
pub fn address() -> pb::Address {
    address_at("Storgatan 1")
}

/// An address on `street` in Stockholm (postal code 11122).
pub fn address_at(street: &str) -> pb::Address {
    pb::Address {
        street: street.into(),
        postal_code: "11122".into(),
        city: "Stockholm".into(),
        position: Some(threshold_domain::geo::point(59.33, 18.06)),
    }
}

/// Loads `parcels` through the ManifestService as `planner`: nordshop's
/// doorstep parcels for Stockholm's depot on 2026-11-23, addressed to
/// `address`. The service seals each address under its household's key.
pub async fn manifest_at(planner: Authed, parcels: &[&str], address: &pb::Address) {
    let (lat, lon) = address
        .position
        .map_or((59.33, 18.06), |p| (p.latitude, p.longitude));
    let rows: String = parcels
        .iter()
        .map(|id| {
            format!(
                "{id},nordshop,SE,STO-1,2026-11-23,{},{},{},{lat},{lon},doorstep,1,,\n",
                address.street, address.postal_code, address.city
            )
        })
        .collect();
    load_manifest(
        planner,
        &format!("{}.csv", EventId::new()),
        &manifest(&rows),
    )
    .await;
}

/// Parcels as [`manifested`] appends them, but addressed to `address`:
/// each sealed under the key of the household `vault` finds there, as the
/// ManifestService seals a row's (for a sandbox that runs no manifest
/// service; [`manifest_at`] goes through it).
pub async fn manifested_at(
    log: &dyn EventLog,
    vault: &threshold_privacy::Vault,
    parcels: &[&str],
    address: &pb::Address,
) {
    let household = vault
        .household(&[
            &address.street,
            &address.postal_code,
            &address.city,
            Country::Se.code(),
        ])
        .expect("household");
    for id in parcels {
        let stream = StreamId::parcel(&ParcelId::new(*id).expect("id"));
        let m = pb::ParcelManifested {
            parcel_id: (*id).into(),
            partner_id: "nordshop".into(),
            country: pb::Country::Se as i32,
            depot_id: "STO-1".into(),
            delivery_date: Some(date_to_proto(
                NaiveDate::from_ymd_opt(2026, 11, 23).expect("date"),
            )),
            service: pb::Service::Doorstep as i32,
            weight_grams: 1000,
            manifest_id: "m".into(),
            manifest_line: 2,
            sealed_address: Some(
                vault
                    .seal_message(&household.subject, &stream.to_string(), address)
                    .expect("sealed"),
            ),
            ..Default::default()
        };
        let e = NewEvent::new(
            EventId::new(),
            &DomainEvent::Parcel(pb::parcel_event::Event::Manifested(m)),
            Utc::now(),
        )
        .country(Country::Se);
        log.append(&stream, ExpectedVersion::NO_STREAM, vec![e])
            .await
            .expect("manifest");
    }
}

/// The registration of lock-1 of acme-locks under [`key`] for `home`, at
/// `address` (`None`: a new key or lock for a home enrolled already).
pub fn registration(home: &str, address: Option<pb::Address>) -> pb::home_event::Event {
    pb::home_event::Event::LockRegistered(pb::LockRegistered {
        home_id: home.into(),
        lock_id: "lock-1".into(),
        vendor: "acme-locks".into(),
        public_key: public_key(&key()),
        country: pb::Country::Se as i32,
        address,
        ..Default::default()
    })
}

/// `request`, carrying the simulated time `at` when `simulated`.
fn when<T>(request: T, at_time: DateTime<Utc>, simulated: bool) -> tonic::Request<T> {
    if simulated {
        at(request, at_time)
    } else {
        tonic::Request::new(request)
    }
}

/// Enrols `home` at `address`: `vendor` registers its lock (lock-1 under
/// [`key`]) at `at`. Returns the one-time claim code the server gave.
pub async fn enrol(
    vendor: &mut AccessServiceClient<Authed>,
    home: &str,
    address: &pb::Address,
    at: DateTime<Utc>,
    simulated: bool,
) -> String {
    let mut r = device(registration(home, Some(address.clone())), at, &key());
    r.home_id = home.into();
    r.sign(&key());
    let reply = vendor
        .record_device_event(when(r, at, simulated))
        .await
        .expect("enrolled")
        .into_inner();
    assert!(!reply.claim_code.is_empty(), "no claim code: {reply:?}");
    reply.claim_code
}

/// `resident_ref` claims `home` with `code`, through `resident`.
pub async fn claim(
    resident: &mut AccessServiceClient<Authed>,
    home: &str,
    resident_ref: &str,
    code: &str,
    at: DateTime<Utc>,
    simulated: bool,
) -> Result<ClaimHomeReply, tonic::Status> {
    let r = ClaimHomeRequest {
        home_id: home.into(),
        resident_ref: resident_ref.into(),
        claim_code: code.into(),
    };
    resident
        .claim_home(when(r, at, simulated))
        .await
        .map(tonic::Response::into_inner)
}

/// A home ready for grants, in one call: `parcels` manifested to
/// `address` (through the sandbox's ManifestService), `home` enrolled at
/// the same address by `vendor` and claimed by `resident_ref` through
/// `resident`, now.
pub async fn home_ready(
    sandbox: &crate::Sandbox,
    vendor: &mut AccessServiceClient<Authed>,
    resident: &mut AccessServiceClient<Authed>,
    home: &str,
    resident_ref: &str,
    parcels: &[&str],
    address: &pb::Address,
) {
    manifest_at(sandbox.planner(), parcels, address).await;
    let now = Utc::now();
    let code = enrol(vendor, home, address, now, false).await;
    claim(resident, home, resident_ref, &code, now, false)
        .await
        .expect("claimed");
}

/// `home` enrolled at `address` by `vendor` and claimed by `resident_ref`
/// through `resident`, at `at`.
pub async fn enrolled_and_claimed(
    vendor: &mut AccessServiceClient<Authed>,
    resident: &mut AccessServiceClient<Authed>,
    home: &str,
    resident_ref: &str,
    address: &pb::Address,
    at: DateTime<Utc>,
    simulated: bool,
) {
    let code = enrol(vendor, home, address, at, simulated).await;
    claim(resident, home, resident_ref, &code, at, simulated)
        .await
        .expect("claimed");
}

/// Everything but the grant an entry at `at` needs: SE-1 manifested to
/// [`address`] (sealed with `vault`), home-1 enrolled there (its lock
/// registered with [`key`] by `vendor`) and claimed by res-1 through
/// `resident`, route r-1 of drv-1 carrying SE-1, drv-1's scan of SE-1, and
/// home-1's camera beating at `at`. `at` carries the simulated time to a
/// simulation's server.
pub async fn door(
    log: &dyn EventLog,
    vault: &threshold_privacy::Vault,
    vendor: &mut AccessServiceClient<Authed>,
    resident: &mut AccessServiceClient<Authed>,
    at: DateTime<Utc>,
    simulated: bool,
) {
    manifested_at(log, vault, &["SE-1"], &address()).await;
    enrolled_and_claimed(
        vendor,
        resident,
        "home-1",
        "res-1",
        &address(),
        at,
        simulated,
    )
    .await;
    facts(
        log,
        "route/r-1",
        vec![DomainEvent::Route(pb::route_event::Event::Planned(
            pb::RoutePlanned {
                route_id: "r-1".into(),
                driver_id: "drv-1".into(),
                plan_version: 1,
                stops: vec![pb::PlannedStop {
                    index: 0,
                    parcel_ids: vec!["SE-1".into()],
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))],
        at,
    )
    .await;
    facts(
        log,
        "parcel/SE-1",
        vec![DomainEvent::Parcel(
            pb::parcel_event::Event::AttemptStarted(pb::AttemptStarted {
                attempt: 1,
                route_id: "r-1".into(),
                driver_id: "drv-1".into(),
                device_id: "hh-1".into(),
            }),
        )],
        at,
    )
    .await;
    let beat = pb::home_event::Event::CameraOnline(pb::CameraOnline {
        camera_id: "cam-1".into(),
        recording: true,
    });
    vendor
        .record_device_event(when(device(beat, at, &key()), at, simulated))
        .await
        .expect("device event");
}

/// `request` carrying the simulated time `at`.
pub fn at<T>(request: T, at: DateTime<Utc>) -> tonic::Request<T> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        threshold_api::SIMULATED_TIME_HEADER,
        at.to_rfc3339().parse().expect("ascii"),
    );
    r
}

/// The events of `parcel`'s stream in `log`, in order.
pub async fn parcel_history(log: &dyn EventLog, parcel: &str) -> Vec<pb::parcel_event::Event> {
    log.read_stream(
        &format!("parcel/{parcel}").parse().expect("stream"),
        0,
        1000,
    )
    .await
    .expect("read")
    .into_iter()
    .filter_map(|r| match r.decode().expect("decode") {
        DomainEvent::Parcel(e) => Some(e),
        _ => None,
    })
    .collect()
}

/// The grant's events in `log`, in order.
pub async fn grant_history(log: &dyn EventLog, grant: &str) -> Vec<pb::grant_event::Event> {
    log.read_stream(&format!("grant/{grant}").parse().expect("stream"), 0, 1000)
        .await
        .expect("read")
        .into_iter()
        .filter_map(|r| match r.decode().expect("decode") {
            DomainEvent::Grant(e) => Some(e),
            _ => None,
        })
        .collect()
}
