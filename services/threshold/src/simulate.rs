//! `threshold simulate`: a delivery day across the four countries, driven
//! through the real APIs of a running server.
//!
//! Manifests are loaded through ManifestService (generated for the day
//! unless `--manifest` files are given); each depot's drivers are concurrent
//! HandheldService streams; some handhelds drop offline mid-round and resend
//! what they have, duplicates included. In-home parcels get a grant from
//! their resident through AccessService, and each home a signed smart lock
//! and camera. At the door the driver scans the parcel, asks the server to
//! authorize the unlock from where the handheld is, and the lock redeems the
//! nonce before it opens; a refusal turns into the grant's fallback. Some
//! days go wrong on purpose: residents revoke, cameras are offline, a
//! driver asks from down the street, an alarm is left armed, a captured
//! unlock is replayed, a door is left open or a camera drops while it is,
//! and the report shows each refusal by reason and each alert by kind. The
//! server must run as a simulation (`serve --simulation`, as `threshold run`
//! does): the simulated day's clock decides the windows.
//!
//! Each parcel's fate is drawn from a generator seeded by the day's seed and
//! the parcel's id, so the same seed gives the same day — same parcels,
//! same outcomes, same report — whatever the timing and concurrency.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_access_service::device::{Signed, SigningKey, key_from_seed, public_key};
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{
    AttemptAck, AttemptFailedReport, AttemptStartedReport, AttemptsReportRequest,
    AuthorizeUnlockRequest, ClockRequest, DeliveredReport, DeviceEventRequest, GetRouteRequest,
    HandheldEvent, IssueGrantRequest, PlanDayRequest, ReceiptRequest, RedeemUnlockRequest,
    RevokeGrantRequest, attempt_ack,
};
use threshold_auth::{Authed, LocalTokens, Role};
use threshold_domain::country::{date_to_proto, instant, timestamp};
use threshold_domain::{Country, EventId, pb};
use threshold_manifest::{ManifestReader, Row};
use threshold_manifest_service::client;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The services the simulator calls, each of which may be in a process of
/// its own: `--service-url NAME=URL` names them.
pub(crate) const SERVICE_NAMES: [&str; 5] =
    ["manifest", "planning", "attempts", "access", "analytics"];

/// Where each service is: `server` unless `urls` names another URL for it.
pub(crate) fn service_urls(
    server: &str,
    urls: &[String],
) -> Result<BTreeMap<&'static str, String>, BoxError> {
    let mut out: BTreeMap<&'static str, String> = SERVICE_NAMES
        .iter()
        .map(|n| (*n, server.to_owned()))
        .collect();
    for u in urls {
        let (name, url) = u
            .split_once('=')
            .ok_or_else(|| format!("--service-url {u:?} is not NAME=URL"))?;
        let slot = SERVICE_NAMES.iter().find(|n| **n == name).ok_or_else(|| {
            format!(
                "--service-url {u:?}: no service {name:?}; one of {}",
                SERVICE_NAMES.join(", ")
            )
        })?;
        out.insert(slot, url.to_owned());
    }
    Ok(out)
}

/// Connections to the services, each with the credential of the role the
/// simulator plays there: the planner, the drivers' handhelds, the
/// residents, the lock vendor's cloud and the analyst.
#[derive(Clone)]
struct Conn {
    /// The planner at ManifestService.
    manifest: Authed,
    /// The planner at PlanningService.
    planner: Authed,
    /// A handheld at HandheldService.
    handheld: Authed,
    /// A handheld at AccessService, asking for unlocks.
    unlock: Authed,
    resident: Authed,
    vendor: Authed,
    analyst: Authed,
}

impl Conn {
    async fn new(
        urls: &BTreeMap<&'static str, String>,
        tokens: &LocalTokens,
    ) -> Result<Self, BoxError> {
        let mut channels: BTreeMap<&str, Channel> = BTreeMap::new();
        for url in urls.values() {
            if !channels.contains_key(url.as_str()) {
                channels.insert(url, crate::connect(url).await?);
            }
        }
        let at = |service: &str, role: Role| -> Result<Authed, BoxError> {
            let token = tokens
                .token(role)
                .ok_or_else(|| format!("no local {role} token"))?;
            let channel = urls
                .get(service)
                .and_then(|u| channels.get(u.as_str()))
                .ok_or_else(|| format!("no address for {service}"))?;
            Ok(threshold_auth::authed(channel.clone(), Some(token))?)
        };
        Ok(Self {
            manifest: at("manifest", Role::Planner)?,
            planner: at("planning", Role::Planner)?,
            handheld: at("attempts", Role::Handheld)?,
            unlock: at("access", Role::Handheld)?,
            resident: at("access", Role::Resident)?,
            vendor: at("access", Role::LockVendor)?,
            analyst: at("analytics", Role::Analyst)?,
        })
    }
}

/// Options of `threshold simulate`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The local delivery date.
    #[arg(long, default_value = "2026-11-23")]
    date: NaiveDate,
    /// Parcels in a generated day (ignored with --manifest).
    #[arg(long, default_value_t = 4000)]
    parcels: u32,
    /// Seed of the day.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Search time per depot when planning the day's routes.
    #[arg(long, default_value_t = 1.0)]
    plan_seconds: f64,
    /// Manifest files to load and drive instead of a generated day (repeatable).
    #[arg(long)]
    manifest: Vec<PathBuf>,
    /// The server.
    #[arg(
        long,
        env = "THRESHOLD_SERVER",
        default_value = "http://127.0.0.1:50051"
    )]
    server: String,
    /// The server's data directory: the simulator plays every role with the
    /// local credentials its first start made there.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// A service in another process than --server: `NAME=URL`, NAME one of
    /// manifest, planning, attempts, access, analytics (repeatable).
    #[arg(long)]
    service_url: Vec<String>,
}

/// Depots at real Nordic city coordinates.
const DEPOTS: &[(&str, Country, f64, f64, &str)] = &[
    ("CPH-1", Country::Dk, 55.676, 12.568, "København"),
    ("AAR-1", Country::Dk, 56.162, 10.203, "Aarhus"),
    ("HEL-1", Country::Fi, 60.169, 24.938, "Helsinki"),
    ("TRE-1", Country::Fi, 61.498, 23.761, "Tampere"),
    ("OSL-1", Country::No, 59.913, 10.752, "Oslo"),
    ("BGO-1", Country::No, 60.391, 5.322, "Bergen"),
    ("STO-1", Country::Se, 59.329, 18.068, "Stockholm"),
    ("GOT-1", Country::Se, 57.708, 11.974, "Göteborg"),
];

/// Attempts before a parcel goes back to the depot for good.
const MAX_ATTEMPTS: usize = 3;

/// Share of in-home grants their resident revokes before the driver comes.
const REVOKED: f64 = 0.04;

#[derive(Debug, Clone)]
struct Parcel {
    id: String,
    country: Country,
    /// The resident's window, for in-home parcels.
    window: Option<pb::LocalWindow>,
    position: Option<pb::GeoPoint>,
}

impl Parcel {
    /// The window's UTC bounds, for in-home parcels.
    fn window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.window
            .as_ref()
            .and_then(|w| threshold_domain::country::window_bounds(w).ok())
    }

    fn grant_id(&self) -> String {
        format!("g-{}", self.id)
    }

    fn home_id(&self) -> String {
        format!("h-{}", self.id)
    }

    fn lock_id(&self) -> String {
        format!("lock-{}", self.id)
    }
}

/// A generated manifest for the day, as CSV.
fn generate(date: NaiveDate, parcels: u32, seed: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut csv = threshold_manifest::COLUMNS.join(",");
    csv.push('\n');
    for n in 0..parcels {
        let (depot, country, lat, lon, city) = DEPOTS[n as usize % DEPOTS.len()];
        let in_home = rng.random_bool(0.2);
        let (ws, we) = if in_home {
            let h = rng.random_range(9..16);
            (format!("{h:02}:00"), format!("{:02}:00", h + 3))
        } else {
            (String::new(), String::new())
        };
        let service = if in_home {
            "in_home"
        } else if rng.random_bool(0.1) {
            "locker"
        } else {
            "doorstep"
        };
        csv.push_str(&format!(
            "{}-{depot}-{n:06},{},{},{depot},{date},Street {},{:05},{city},{:.5},{:.5},{service},{:.2},{ws},{we}\n",
            country.code(),
            ["nordshop", "fjallgear", "kotimarket", "hemmabutiken"][rng.random_range(0..4)],
            country.code(),
            rng.random_range(1..200),
            rng.random_range(1000..99999),
            lat + rng.random_range(-0.08..0.08),
            lon + rng.random_range(-0.15..0.15),
            rng.random_range(0.2..15.0),
        ));
    }
    csv
}

/// Loads a manifest through the server and returns the parcels it holds.
async fn load(conn: &Conn, name: &str, csv: Vec<u8>) -> Result<(Vec<Parcel>, u64), BoxError> {
    let mut rejected = 0;
    let summary = client::load(
        &mut ManifestServiceClient::new(conn.manifest.clone()),
        name,
        std::io::Cursor::new(csv.clone()),
        |r| {
            rejected += 1;
            eprintln!("{name}: line {}, field {}: {}", r.line, r.field, r.message);
        },
    )
    .await
    .map_err(|s| format!("loading {name}: {}", s.message()))?;
    println!(
        "manifest {name}: {} rows, {} accepted, {} already loaded, {} rejected",
        summary.rows, summary.accepted, summary.unchanged, summary.rejected
    );
    let parcels = ManifestReader::new(csv.as_slice(), name)?
        .filter_map(|row| match row {
            Row::Accepted { parcel, .. } => Some(Parcel {
                id: parcel.parcel_id.clone(),
                country: Country::from_proto(parcel.country).ok()?,
                window: (parcel.service == pb::Service::InHome as i32)
                    .then(|| parcel.in_home_window.clone())
                    .flatten(),
                position: parcel.address.as_ref().and_then(|a| a.position),
            }),
            Row::Rejected(_) => None,
        })
        .collect();
    Ok((parcels, summary.accepted))
}

/// What goes wrong at an in-home door, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trouble {
    /// The camera went offline in the morning and stays so.
    CameraOffline,
    /// The driver asks from down the street.
    OutsideGeofence,
    /// The resident forgot to disarm the alarm.
    AlarmLeftArmed,
    /// The lock's unlock request is captured and replayed after the entry.
    Replayed,
    /// The courier leaves without relocking and comes back minutes later.
    DoorLeftOpen,
    /// The camera drops (Wi-Fi deauthentication) while the door is open.
    CameraDrops,
}

/// An in-home parcel's home and what goes wrong there.
struct HomeFate {
    trouble: Option<Trouble>,
    fallback: pb::Fallback,
    pet: bool,
    alarm: bool,
}

/// What the day holds for a parcel, drawn from the day's seed and the
/// parcel's id only.
struct Fate {
    /// The resident revokes the in-home grant before the driver comes.
    revoked: bool,
    /// What happens at the door, attempt by attempt, when the parcel is not
    /// delivered in-home (the last one delivered, or all failed).
    door: Vec<Report>,
    /// For in-home parcels: the home.
    home: HomeFate,
}

fn fate(seed: u64, parcel: &Parcel) -> Fate {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parcel.id.hash(&mut h);
    let mut rng = SmallRng::seed_from_u64(seed ^ h.finish());
    let revoked = rng.random_bool(REVOKED);
    let mut door = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        // At the door a recipient is out about a third of the time: about
        // 1.5 drives per parcel.
        if rng.random_bool(0.64) {
            let method = if rng.random_bool(0.15) {
                pb::DeliveryMethod::Neighbour
            } else {
                pb::DeliveryMethod::Doorstep
            };
            door.push(Report::Delivered(DeliveredReport {
                method: method as i32,
                grant_id: String::new(),
                position: None,
            }));
            break;
        }
        let reason = [
            pb::FailureReason::NotHome,
            pb::FailureReason::NotHome,
            pb::FailureReason::NotHome,
            pb::FailureReason::NoAccess,
            pb::FailureReason::Refused,
        ][rng.random_range(0..5)];
        door.push(Report::Failed(AttemptFailedReport {
            reason: reason as i32,
            note: String::new(),
        }));
    }
    // Far more trouble than a real day has, so that a short day shows
    // every kind of it.
    let trouble = [
        (0.05, Trouble::CameraOffline),
        (0.05, Trouble::OutsideGeofence),
        (0.05, Trouble::AlarmLeftArmed),
        (0.05, Trouble::Replayed),
        (0.05, Trouble::DoorLeftOpen),
        (0.05, Trouble::CameraDrops),
    ];
    let draw: f64 = rng.random();
    let mut sum = 0.0;
    let trouble = trouble.iter().find_map(|(p, t)| {
        sum += p;
        (draw < sum).then_some(*t)
    });
    let fallback = match rng.random_range(0..20) {
        0..12 => pb::Fallback::Doorstep,
        12..16 => pb::Fallback::Locker,
        16..19 => pb::Fallback::Neighbour,
        _ => pb::Fallback::Return,
    };
    let pet = rng.random_bool(0.2);
    let alarm = trouble == Some(Trouble::AlarmLeftArmed) || rng.random_bool(0.15);
    Fate {
        revoked,
        door,
        home: HomeFate {
            trouble,
            fallback,
            pet,
            alarm,
        },
    }
}

/// The home's device key, derived from the day's seed and the home.
fn device_key(seed: u64, home: &str) -> SigningKey {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (seed, home, i).hash(&mut h);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    key_from_seed(bytes)
}

/// A home's device reports `event` at `at`, signed with its key; the
/// alerts the server raised on it.
async fn report_device(
    access: &mut AccessServiceClient<Authed>,
    key: &SigningKey,
    home: &str,
    event: pb::home_event::Event,
    at_time: DateTime<Utc>,
) -> Result<Vec<i32>, BoxError> {
    let mut r = DeviceEventRequest {
        event_id: EventId::new().to_string(),
        home_id: home.to_owned(),
        occurred_at: Some(timestamp(at_time)),
        event: Some(pb::HomeEvent {
            event: Some(event),
            prev_hash: Vec::new(),
        }),
        signature: Vec::new(),
    };
    r.sign(key);
    Ok(access
        .record_device_event(at(r, at_time)?)
        .await
        .map_err(|s| access_error(&format!("device event of {home}"), &s))?
        .into_inner()
        .alerts_raised)
}

/// `request` at `at` on the simulation's clock.
fn at<T>(request: T, at: DateTime<Utc>) -> Result<tonic::Request<T>, BoxError> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        threshold_api::SIMULATED_TIME_HEADER,
        at.to_rfc3339().parse()?,
    );
    Ok(r)
}

/// A server refusing the simulation's clock is not running a simulation.
fn access_error(what: &str, s: &tonic::Status) -> BoxError {
    if s.code() == tonic::Code::FailedPrecondition
        && s.message().contains(threshold_api::SIMULATED_TIME_HEADER)
    {
        format!(
            "{what}: the server must run as a simulation (threshold serve --simulation) \
             for in-home grants to follow the simulated day: {}",
            s.message()
        )
        .into()
    } else {
        format!("{what}: {}", s.message()).into()
    }
}

/// The resident's grant for an in-home parcel, scoped to the planned driver:
/// issued in the morning, and revoked an hour before the window when the
/// fate says so (after the routes were planned: the driver finds out at the
/// door).
async fn grant(
    conn: &Conn,
    parcel: &Parcel,
    driver: &str,
    route_id: &str,
    fate: &Fate,
    key: &SigningKey,
) -> Result<(), BoxError> {
    let (Some(window), Some((start, _))) = (&parcel.window, parcel.window()) else {
        return Ok(());
    };
    let access = &mut AccessServiceClient::new(conn.vendor.clone());
    // The home's lock was installed and registered by its vendor.
    let home = parcel.home_id();
    let morning = start - Duration::hours(4);
    let _ = report_device(
        access,
        key,
        &home,
        pb::home_event::Event::LockRegistered(pb::LockRegistered {
            home_id: home.clone(),
            lock_id: parcel.lock_id(),
            vendor: "nordlock".into(),
            public_key: public_key(key),
            country: parcel.country.to_proto() as i32,
        }),
        morning,
    )
    .await?;
    if fate.home.alarm {
        // The resident disarms the alarm before the window, unless forgotten.
        let _ = report_device(
            access,
            key,
            &home,
            pb::home_event::Event::Alarm(pb::AlarmState {
                device_id: format!("alarm-{}", parcel.id),
                armed: fate.home.trouble == Some(Trouble::AlarmLeftArmed),
            }),
            start - Duration::minutes(30),
        )
        .await?;
    }
    if fate.home.trouble == Some(Trouble::CameraOffline) {
        let _ = report_device(
            access,
            key,
            &home,
            pb::home_event::Event::CameraOffline(pb::CameraOffline {
                camera_id: format!("cam-{}", parcel.id),
                reason: "no heartbeat since the morning".into(),
            }),
            morning,
        )
        .await?;
    }
    let revoked = fate.revoked;
    let issue = IssueGrantRequest {
        grant_id: parcel.grant_id(),
        home_id: home,
        parcel_ids: vec![parcel.id.clone()],
        resident_ref: format!("resident-{}", parcel.id),
        country: parcel.country.to_proto() as i32,
        window_start_local: window.start_local.clone(),
        window_end_local: window.end_local.clone(),
        scope: Some(pb::CourierScope {
            driver_id: driver.to_owned(),
            route_id: route_id.to_owned(),
        }),
        geofence: parcel.position.map(|center| pb::Geofence {
            center: Some(center),
            radius_m: 50,
            ..Default::default()
        }),
        conditions: Some(pb::HouseholdConditions {
            pet_present: fate.home.pet,
            alarm_to_disarm: fate.home.alarm,
        }),
        fallback: fate.home.fallback as i32,
    };
    let access = &mut AccessServiceClient::new(conn.resident.clone());
    access
        .issue_grant(at(issue, start - Duration::hours(3))?)
        .await
        .map_err(|s| access_error(&format!("grant for {}", parcel.id), &s))?;
    if revoked {
        let revoke = RevokeGrantRequest {
            grant_id: parcel.grant_id(),
            by: "resident".into(),
            reason: "plans changed".into(),
        };
        access
            .revoke_grant(at(revoke, start - Duration::hours(1))?)
            .await
            .map_err(|s| access_error(&format!("revoking {}", parcel.grant_id()), &s))?;
    }
    Ok(())
}

/// Sends `events` on a fresh stream and reads `read` acknowledgements (all
/// when `None`); dropping the stream after fewer is a handheld going offline.
async fn stream(
    conn: &Conn,
    events: &[HandheldEvent],
    read: Option<usize>,
) -> Result<Vec<AttemptAck>, BoxError> {
    let (tx, rx) = mpsc::channel(events.len().max(1));
    for e in events {
        tx.send(e.clone()).await?;
    }
    drop(tx);
    let mut acks = HandheldServiceClient::new(conn.handheld.clone())
        .stream_attempts(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let want = read.unwrap_or(events.len());
    let mut got = Vec::with_capacity(want);
    while got.len() < want {
        match acks.message().await? {
            Some(a) => got.push(a),
            None => break,
        }
    }
    Ok(got)
}

/// How one driver's day went.
#[derive(Default)]
struct DriverDay {
    stored: u64,
    duplicates: u64,
    rejected: u64,
    reconnects: u64,
    last_position: u64,
    grants: u64,
    revoked: u64,
    unlocks: u64,
    /// Refused unlocks by reason.
    denied: BTreeMap<String, u64>,
    /// Refused unlocks by the fallback they turned into.
    fallbacks: BTreeMap<String, u64>,
    /// Entries the lock redeemed.
    entries: u64,
    /// Replayed unlock requests the server refused.
    replays_refused: u64,
    /// Alerts raised, by kind, as the device reports were answered.
    alerts: BTreeMap<String, u64>,
    /// In-home deliveries the server would not close before the relock.
    closings_refused: u64,
    /// Receipts whose chain head was handed to the resident.
    receipts: u64,
}

impl DriverDay {
    fn add(&mut self, d: DriverDay) {
        self.stored += d.stored;
        self.duplicates += d.duplicates;
        self.rejected += d.rejected;
        self.reconnects += d.reconnects;
        self.last_position = self.last_position.max(d.last_position);
        self.grants += d.grants;
        self.revoked += d.revoked;
        self.unlocks += d.unlocks;
        for (reason, n) in d.denied {
            *self.denied.entry(reason).or_default() += n;
        }
        for (f, n) in d.fallbacks {
            *self.fallbacks.entry(f).or_default() += n;
        }
        self.entries += d.entries;
        self.replays_refused += d.replays_refused;
        for (kind, n) in d.alerts {
            *self.alerts.entry(kind).or_default() += n;
        }
        self.closings_refused += d.closings_refused;
        self.receipts += d.receipts;
    }
}

/// One driver's planned route.
struct Drive {
    driver: String,
    route_id: String,
    /// The parcels in planned order, with their planned arrival.
    stops: Vec<(Parcel, DateTime<Utc>)>,
}

/// One driver's handheld: its stream's sequence, and the access client it
/// asks for unlocks with (the home's devices share it in the simulation).
struct Handheld<'a> {
    conn: &'a Conn,
    /// As the handheld.
    access: AccessServiceClient<Authed>,
    /// As the home's lock and camera.
    lock: AccessServiceClient<Authed>,
    /// As the resident.
    resident: AccessServiceClient<Authed>,
    driver: String,
    route_id: String,
    sequence: u64,
    seed: u64,
}

impl Handheld<'_> {
    /// The next handheld event, about `parcel`, at `when`.
    fn event(&mut self, parcel: &Parcel, when: DateTime<Utc>, report: Report) -> HandheldEvent {
        self.sequence += 1;
        HandheldEvent {
            event_id: EventId::new().to_string(),
            device_id: format!("hh-{}", self.driver),
            sequence: self.sequence,
            parcel_id: parcel.id.clone(),
            driver_id: self.driver.clone(),
            route_id: self.route_id.clone(),
            occurred_at: Some(timestamp(when)),
            report: Some(report),
        }
    }
}

/// A stand-in for a clip's SHA-256: 64 hex digits from its name.
fn clip_hash(name: &str) -> String {
    (0..4u8)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (name, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// One in-home stop at `t`: the driver scans the parcel and asks to unlock
/// from the handheld's position; the lock redeems the nonce, reports the
/// entry and, once the courier is out, the relock; the resident's receipt
/// is fetched. Returns the attempt's outcome and when it is reported:
/// delivered in-home, or the grant's fallback when the unlock is refused.
async fn enter(
    h: &mut Handheld<'_>,
    parcel: &Parcel,
    fate: &Fate,
    t: DateTime<Utc>,
    day: &mut DriverDay,
) -> Result<(Report, DateTime<Utc>), BoxError> {
    let trouble = fate.home.trouble;
    let home = parcel.home_id();
    let key = device_key(h.seed, &home);
    let camera = format!("cam-{}", parcel.id);
    // The scan at the door, acknowledged before the unlock is asked.
    let scan = h.event(parcel, t, Report::Started(AttemptStartedReport {}));
    for a in stream(h.conn, &[scan], None).await? {
        if attempt_ack::Result::try_from(a.result) != Ok(attempt_ack::Result::Stored) {
            return Err(format!(
                "{}: the scan of {} was not stored: {}",
                h.driver, parcel.id, a.error
            )
            .into());
        }
        day.stored += 1;
        day.last_position = day.last_position.max(a.position);
    }
    if trouble != Some(Trouble::CameraOffline) {
        let beat = pb::home_event::Event::CameraOnline(pb::CameraOnline {
            camera_id: camera.clone(),
            recording: true,
        });
        report_device(&mut h.lock, &key, &home, beat, t - Duration::seconds(10)).await?;
    }
    let mut position = parcel.position;
    if trouble == Some(Trouble::OutsideGeofence)
        && let Some(p) = &mut position
    {
        // About 550 m north of the door.
        p.latitude += 0.005;
    }
    let ask = AuthorizeUnlockRequest {
        grant_id: parcel.grant_id(),
        parcel_id: parcel.id.clone(),
        driver_id: h.driver.clone(),
        route_id: h.route_id.clone(),
        position,
        pet_acknowledged: fate.home.pet,
    };
    let reply = h
        .access
        .authorize_unlock(at(ask, t)?)
        .await
        .map_err(|s| access_error(&format!("unlock for {}", parcel.id), &s))?
        .into_inner();
    // A refusal, by the server or at the lock, becomes the grant's fallback.
    let fallback = |day: &mut DriverDay, reason: i32, detail: String| {
        *day.denied
            .entry(threshold_access_service::reason_name(reason))
            .or_default() += 1;
        let fallback = pb::Fallback::try_from(reply.fallback).unwrap_or(pb::Fallback::Doorstep);
        *day.fallbacks
            .entry(
                fallback
                    .as_str_name()
                    .trim_start_matches("FALLBACK_")
                    .to_lowercase(),
            )
            .or_default() += 1;
        let delivered = |method: pb::DeliveryMethod| {
            Report::Delivered(DeliveredReport {
                method: method as i32,
                grant_id: String::new(),
                position: parcel.position,
            })
        };
        let outcome = match fallback {
            pb::Fallback::Return => Report::Failed(AttemptFailedReport {
                reason: pb::FailureReason::AccessDenied as i32,
                note: detail,
            }),
            pb::Fallback::Locker => delivered(pb::DeliveryMethod::Locker),
            pb::Fallback::Neighbour => delivered(pb::DeliveryMethod::Neighbour),
            _ => delivered(pb::DeliveryMethod::Doorstep),
        };
        (outcome, t + Duration::minutes(1))
    };
    if !reply.authorized {
        return Ok(fallback(day, reply.reason, reply.detail.clone()));
    }
    day.unlocks += 1;
    // The lock presents the nonce before it opens.
    let mut redeem = RedeemUnlockRequest {
        home_id: home.clone(),
        lock_id: parcel.lock_id(),
        grant_id: parcel.grant_id(),
        nonce: reply.nonce.clone(),
        signature: Vec::new(),
    };
    redeem.sign(&key);
    let opened = h
        .lock
        .redeem_unlock(at(redeem.clone(), t)?)
        .await
        .map_err(|s| access_error(&format!("redeeming for {}", parcel.id), &s))?
        .into_inner();
    if !opened.open {
        // Refused at the lock (an authorization that ran out, say): the
        // door stays shut.
        return Ok(fallback(day, opened.reason, opened.detail));
    }
    day.entries += 1;
    let mut alerts = Vec::new();
    let lock = |e| (e, parcel.lock_id());
    let (unlocked, lock_id) = lock(pb::home_event::Event::Unlocked(pb::LockUnlocked {
        lock_id: parcel.lock_id(),
        grant_id: parcel.grant_id(),
        nonce: reply.nonce.clone(),
    }));
    alerts.extend(
        report_device(
            &mut h.lock,
            &key,
            &home,
            unlocked,
            t + Duration::seconds(30),
        )
        .await?,
    );
    if trouble == Some(Trouble::Replayed) {
        let again = h
            .lock
            .redeem_unlock(at(redeem, t + Duration::seconds(45))?)
            .await
            .map_err(|s| access_error(&format!("replaying for {}", parcel.id), &s))?
            .into_inner();
        if again.open {
            return Err(format!("a replayed unlock request opened {home}").into());
        }
        day.replays_refused += 1;
    }
    if trouble == Some(Trouble::CameraDrops) {
        let down = pb::home_event::Event::CameraOffline(pb::CameraOffline {
            camera_id: camera.clone(),
            reason: "wifi deauthentication".into(),
        });
        alerts.extend(
            report_device(&mut h.lock, &key, &home, down, t + Duration::seconds(60)).await?,
        );
    } else {
        let clip = pb::home_event::Event::ClipRecorded(pb::ClipRecorded {
            camera_id: camera.clone(),
            uri: format!("clips://{home}/{}", reply.nonce),
            sha256: clip_hash(&reply.nonce),
            started_at: Some(timestamp(t + Duration::seconds(30))),
            ended_at: Some(timestamp(t + Duration::seconds(110))),
        });
        alerts.extend(
            report_device(&mut h.lock, &key, &home, clip, t + Duration::seconds(110)).await?,
        );
    }
    let relocked_at = if trouble == Some(Trouble::DoorLeftOpen) {
        // The courier walks off without relocking; the handheld tries to
        // close the attempt, and the server says no.
        let early = h.event(
            parcel,
            t + Duration::minutes(2),
            Report::Delivered(DeliveredReport {
                method: pb::DeliveryMethod::InHome as i32,
                grant_id: parcel.grant_id(),
                position: parcel.position,
            }),
        );
        let acks = stream(h.conn, &[early], None).await?;
        if acks
            .iter()
            .any(|a| attempt_ack::Result::try_from(a.result) == Ok(attempt_ack::Result::Stored))
        {
            return Err(format!(
                "{} was closed as delivered before its door was relocked",
                parcel.id
            )
            .into());
        }
        day.closings_refused += 1;
        let left = pb::home_event::Event::DoorLeftOpen(pb::DoorLeftOpen {
            lock_id: lock_id.clone(),
            open_seconds: 240,
        });
        alerts.extend(
            report_device(&mut h.lock, &key, &home, left, t + Duration::seconds(270)).await?,
        );
        t + Duration::minutes(6)
    } else {
        t + Duration::minutes(2)
    };
    let relocked = pb::home_event::Event::Relocked(pb::LockRelocked {
        lock_id: lock_id.clone(),
    });
    alerts.extend(report_device(&mut h.lock, &key, &home, relocked, relocked_at).await?);
    let handle = pb::home_event::Event::HandleChecked(pb::HandleChecked {
        lock_id,
        locked: true,
    });
    alerts.extend(
        report_device(
            &mut h.lock,
            &key,
            &home,
            handle,
            relocked_at + Duration::seconds(5),
        )
        .await?,
    );
    for kind in alerts {
        let kind = pb::AlertKind::try_from(kind).map_or("unknown", |k| k.as_str_name());
        *day.alerts
            .entry(kind.trim_start_matches("ALERT_KIND_").to_lowercase())
            .or_default() += 1;
    }
    // The resident's receipt holds the home's chain head after the relock.
    let receipt = h
        .resident
        .get_receipt(at(
            ReceiptRequest {
                grant_id: parcel.grant_id(),
                parcel_id: parcel.id.clone(),
            },
            relocked_at,
        )?)
        .await
        .map_err(|s| access_error(&format!("receipt for {}", parcel.id), &s))?
        .into_inner();
    if receipt.chain_head.len() == 64 {
        day.receipts += 1;
    }
    Ok((
        Report::Delivered(DeliveredReport {
            method: pb::DeliveryMethod::InHome as i32,
            grant_id: parcel.grant_id(),
            position: parcel.position,
        }),
        relocked_at + Duration::seconds(30),
    ))
}

/// Drives a planned route: the day's seed decides each parcel's fate, the
/// driver's seed when the handheld drops offline.
async fn drive(
    conn: Conn,
    route: Drive,
    day_seed: u64,
    driver_seed: u64,
) -> Result<DriverDay, BoxError> {
    let Drive {
        driver,
        route_id,
        stops,
    } = route;
    let mut rng = SmallRng::seed_from_u64(driver_seed);
    let mut day = DriverDay::default();
    let mut plans = Vec::with_capacity(stops.len());
    for (p, planned) in stops {
        let f = fate(day_seed, &p);
        if p.window.is_some() {
            let key = device_key(day_seed, &p.home_id());
            grant(&conn, &p, &driver, &route_id, &f, &key).await?;
            day.grants += 1;
            day.revoked += u64::from(f.revoked);
        }
        plans.push((p, f, planned));
    }
    let mut handheld = Handheld {
        conn: &conn,
        access: AccessServiceClient::new(conn.unlock.clone()),
        lock: AccessServiceClient::new(conn.vendor.clone()),
        resident: AccessServiceClient::new(conn.resident.clone()),
        driver: driver.clone(),
        route_id: route_id.clone(),
        sequence: 0,
        seed: day_seed,
    };
    // Where each parcel is in its fate: in-home parcels start at the grant,
    // every other at the door.
    let mut next: Vec<Option<usize>> = plans
        .iter()
        .map(|(p, _, _)| if p.window.is_some() { None } else { Some(0) })
        .collect();
    let mut done = vec![false; plans.len()];
    for round in 0..MAX_ATTEMPTS {
        let mut events = Vec::new();
        for (i, (parcel, f, planned)) in plans.iter().enumerate() {
            if done[i] {
                continue;
            }
            // The planned arrival; another try a few hours later.
            let at_time = *planned + Duration::hours(3 * round as i64);
            if next[i].is_none() {
                // In-home: planned inside the window. The scan went out
                // already; the outcome joins the round's events.
                let (report, when) = enter(&mut handheld, parcel, f, at_time, &mut day).await?;
                done[i] = true;
                events.push(handheld.event(parcel, when, report));
                continue;
            }
            let report = match next[i].and_then(|k| f.door.get(k).map(|r| (k, r))) {
                Some((k, r)) => {
                    next[i] = Some(k + 1);
                    done[i] = matches!(r, Report::Delivered(_));
                    r.clone()
                }
                None => {
                    done[i] = true;
                    continue;
                }
            };
            for r in [Report::Started(AttemptStartedReport {}), report] {
                events.push(handheld.event(parcel, at_time, r));
            }
        }
        if events.is_empty() {
            break;
        }
        // One handheld in five loses its connection part-way through a round
        // and, back online, resends everything from a little before the last
        // acknowledgement it saw.
        let mut acks = Vec::new();
        if rng.random_bool(0.2) && events.len() > 4 {
            let cut = rng.random_range(1..events.len() - 1);
            acks.extend(stream(&conn, &events, Some(cut)).await?);
            day.reconnects += 1;
            let from = cut.saturating_sub(2);
            let resent = stream(&conn, &events[from..], None).await?;
            acks.truncate(from);
            acks.extend(resent);
        } else {
            acks = stream(&conn, &events, None).await?;
        }
        for a in &acks {
            match attempt_ack::Result::try_from(a.result) {
                Ok(attempt_ack::Result::Stored) => day.stored += 1,
                Ok(attempt_ack::Result::Duplicate) => day.duplicates += 1,
                _ => {
                    day.rejected += 1;
                    eprintln!("{driver}: event {} rejected: {}", a.sequence, a.error);
                }
            }
            day.last_position = day.last_position.max(a.position);
        }
    }
    Ok(day)
}

pub(crate) async fn run(args: Args) -> Result<(), BoxError> {
    let mut manifests = Vec::new();
    if args.manifest.is_empty() {
        let name = format!("simulated-{}-seed{}.csv", args.date, args.seed);
        manifests.push((
            name,
            generate(args.date, args.parcels, args.seed).into_bytes(),
        ));
    } else {
        for file in &args.manifest {
            let csv = tokio::fs::read(file)
                .await
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let name = file
                .file_name()
                .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
            manifests.push((name, csv));
        }
    }
    let tokens = LocalTokens::load(&args.data)?;
    day(
        &service_urls(&args.server, &args.service_url)?,
        &tokens,
        args.date,
        args.seed,
        args.plan_seconds,
        manifests,
    )
    .await
}

/// Plans the day's routes through PlanningService and reads each driver's
/// route back through HandheldService.GetRoute, as a handheld would.
async fn plan(
    conn: &Conn,
    date: NaiveDate,
    seconds: f64,
    parcels: Vec<Parcel>,
) -> Result<Vec<Drive>, BoxError> {
    let reply = PlanningServiceClient::new(conn.planner.clone())
        .plan_day(PlanDayRequest {
            date: Some(date_to_proto(date)),
            depot_ids: Vec::new(),
            seconds_per_depot: seconds,
            objective: String::new(),
        })
        .await
        .map_err(|s| format!("planning the day: {}", s.message()))?
        .into_inner();
    let (mut vans, mut unassigned, mut distance) = (0, 0, 0.0);
    for d in &reply.depots {
        vans += d.vans_used;
        distance += d.distance_m;
        unassigned += d.unassigned.len();
        for u in &d.unassigned {
            eprintln!("{}: {} not planned: {}", d.depot_id, u.parcel_id, u.reason);
        }
    }
    println!(
        "planned {} depots: {vans} vans, {:.0} km, {unassigned} parcels left unplanned",
        reply.depots.len(),
        distance / 1000.0
    );
    let mut by_id: std::collections::HashMap<String, Parcel> =
        parcels.into_iter().map(|p| (p.id.clone(), p)).collect();
    let mut handheld = HandheldServiceClient::new(conn.handheld.clone());
    let mut drives = Vec::new();
    for d in &reply.depots {
        for van in 0..d.vans_available {
            let driver = threshold_routing::depot::driver_id(&d.depot_id, van as usize);
            let routes = handheld
                .get_route(GetRouteRequest {
                    driver_id: driver.clone(),
                    date: Some(date_to_proto(date)),
                })
                .await
                .map_err(|s| format!("route of {driver}: {}", s.message()))?
                .into_inner()
                .routes;
            for r in routes {
                let mut stops = Vec::new();
                for s in r.stops {
                    let at = s
                        .planned_arrival
                        .as_ref()
                        .ok_or("a planned stop without its time")
                        .and_then(|t| instant(t).map_err(|_| "a planned time out of range"))?;
                    for p in s.parcel_ids {
                        if let Some(parcel) = by_id.remove(&p) {
                            stops.push((parcel, at));
                        }
                    }
                }
                if !stops.is_empty() {
                    drives.push(Drive {
                        driver: driver.clone(),
                        route_id: r.route_id,
                        stops,
                    });
                }
            }
        }
    }
    Ok(drives)
}

/// Loads `manifests` and drives their parcels for `date` against `server`,
/// then prints the report by service and by country.
pub(crate) async fn day(
    urls: &BTreeMap<&'static str, String>,
    tokens: &LocalTokens,
    date: NaiveDate,
    seed: u64,
    plan_seconds: f64,
    manifests: Vec<(String, Vec<u8>)>,
) -> Result<(), BoxError> {
    let conn = Conn::new(urls, tokens).await?;
    // In-home grants follow the simulated day's clock: only a server running
    // a simulation takes it. Asked before anything is loaded.
    let clock = AccessServiceClient::new(conn.unlock.clone())
        .clock(ClockRequest {})
        .await
        .map_err(|s| format!("asking the server's clock: {}", s.message()))?
        .into_inner();
    if !clock.simulated {
        return Err(format!(
            "{} runs on its own clock; simulate a day against a server started \
             with `threshold serve --simulation` (or use `threshold run`)",
            urls["access"]
        )
        .into());
    }
    let mut parcels = Vec::new();
    let mut new = 0;
    for (name, csv) in manifests {
        let (loaded, accepted) = load(&conn, &name, csv).await?;
        parcels.extend(loaded);
        new += accepted;
    }
    if new == 0 && !parcels.is_empty() {
        // Every parcel was in the log already: this day has been driven.
        println!("this day is already in the log; reporting it");
        parcels.clear();
    }

    // The day's routes, planned by the server from what was loaded.
    let mut drives = Vec::new();
    if !parcels.is_empty() {
        drives = plan(&conn, date, plan_seconds, parcels).await?;
    }
    let mut tasks = Vec::new();
    for route in drives {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        route.driver.hash(&mut h);
        let driver_seed = seed.rotate_left(8) ^ h.finish();
        tasks.push(tokio::spawn(drive(conn.clone(), route, seed, driver_seed)));
    }
    let drivers = tasks.len();
    let mut total = DriverDay::default();
    for t in tasks {
        total.add(t.await??);
    }
    println!(
        "{drivers} drivers: {} events stored, {} resends answered as duplicates, {} rejected, {} handhelds reconnected",
        total.stored, total.duplicates, total.rejected, total.reconnects
    );
    let denied: u64 = total.denied.values().sum();
    let listed = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            String::new()
        } else {
            format!(
                " ({})",
                m.iter()
                    .map(|(k, n)| format!("{n} {k}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    };
    println!(
        "in-home: {} grants issued, {} revoked by their resident; {} unlocks authorized, {} refused{}",
        total.grants,
        total.revoked,
        total.unlocks,
        denied,
        listed(&total.denied),
    );
    println!(
        "in-home refusals became the grant's fallback:{}",
        listed(&total.fallbacks)
    );
    println!(
        "in-home entries: {} redeemed by the lock, {} replayed unlock requests refused, {} closings refused until the relock, {} receipts",
        total.entries, total.replays_refused, total.closings_refused, total.receipts
    );
    let raised: u64 = total.alerts.values().sum();
    println!("alerts raised: {raised}{}", listed(&total.alerts));

    let mut analytics = AnalyticsServiceClient::new(conn.analyst.clone());
    for by in ["service", "country"] {
        let report = analytics
            .attempts_report(AttemptsReportRequest {
                by: by.into(),
                at_least_position: total.last_position,
                up_to_head: true,
                ..AttemptsReportRequest::default()
            })
            .await
            .map_err(|s| s.message().to_owned())?
            .into_inner();
        println!();
        println!(
            "{:<12} {:>8} {:>9} {:>11} {:>14} {:>9}",
            by, "parcels", "attempts", "per parcel", "first-attempt", "delivered"
        );
        let t = report.total.unwrap_or_default();
        for r in report.rows.iter().chain(std::iter::once(&t)) {
            println!(
                "{:<12} {:>8} {:>9} {:>11.2} {:>13.1}% {:>9}",
                r.group,
                r.parcels,
                r.attempts,
                r.attempts_per_parcel,
                100.0 * r.first_attempt_success_rate,
                r.delivered
            );
        }
    }
    Ok(())
}
