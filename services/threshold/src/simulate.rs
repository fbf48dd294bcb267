//! `threshold simulate`: a delivery day across the four countries, driven
//! through the real APIs of a running server.
//!
//! Manifests are loaded through ManifestService (generated for the day
//! unless `--manifest` files are given); each depot's drivers are concurrent
//! HandheldService streams; some handhelds drop offline mid-round and resend
//! what they have, duplicates included. Each parcel's fate is drawn from a
//! generator seeded by the day's seed and the parcel's id, so the same seed
//! gives the same day — same parcels, same outcomes, same report — whatever
//! the timing and concurrency.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_api::v1::analytics_service_client::AnalyticsServiceClient;
use threshold_api::v1::handheld_event::Report;
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_api::v1::{
    AttemptAck, AttemptFailedReport, AttemptStartedReport, AttemptsReportRequest, DeliveredReport,
    HandheldEvent, attempt_ack,
};
use threshold_domain::country::timestamp;
use threshold_domain::{Country, EventId, pb};
use threshold_manifest::{ManifestReader, Row};
use threshold_manifest_service::client;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// Parcels a driver carries.
const PARCELS_PER_DRIVER: usize = 40;
/// Attempts before a parcel goes back to the depot for good.
const MAX_ATTEMPTS: usize = 3;

#[derive(Debug, Clone)]
struct Parcel {
    id: String,
    depot: String,
    country: Country,
    in_home: bool,
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
async fn load(channel: &Channel, name: &str, csv: Vec<u8>) -> Result<(Vec<Parcel>, u64), BoxError> {
    let mut rejected = 0;
    let summary = client::load(
        &mut ManifestServiceClient::new(channel.clone()),
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
                depot: parcel.depot_id.clone(),
                country: Country::from_proto(parcel.country).ok()?,
                in_home: parcel.service == pb::Service::InHome as i32,
            }),
            Row::Rejected(_) => None,
        })
        .collect();
    Ok((parcels, summary.accepted))
}

/// What happens to a parcel at each attempt, drawn from the day's seed and
/// the parcel's id only.
fn fate(seed: u64, parcel: &Parcel) -> Vec<Report> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parcel.id.hash(&mut h);
    let mut rng = SmallRng::seed_from_u64(seed ^ h.finish());
    let mut reports = Vec::new();
    for _ in 0..MAX_ATTEMPTS {
        // In-home needs nobody home; at the door, a recipient is out about a
        // third of the time: together about 1.5 drives per parcel.
        let success = if parcel.in_home { 0.97 } else { 0.64 };
        if rng.random_bool(success) {
            let method = if parcel.in_home {
                pb::DeliveryMethod::InHome
            } else if rng.random_bool(0.15) {
                pb::DeliveryMethod::Neighbour
            } else {
                pb::DeliveryMethod::Doorstep
            };
            reports.push(Report::Delivered(DeliveredReport {
                method: method as i32,
                grant_id: if parcel.in_home {
                    format!("g-{}", parcel.id)
                } else {
                    String::new()
                },
                position: None,
            }));
            return reports;
        }
        let reason = if parcel.in_home {
            pb::FailureReason::AccessDenied
        } else {
            [
                pb::FailureReason::NotHome,
                pb::FailureReason::NotHome,
                pb::FailureReason::NotHome,
                pb::FailureReason::NoAccess,
                pb::FailureReason::Refused,
            ][rng.random_range(0..5)]
        };
        reports.push(Report::Failed(AttemptFailedReport {
            reason: reason as i32,
            note: String::new(),
        }));
    }
    reports
}

/// Sends `events` on a fresh stream and reads `read` acknowledgements (all
/// when `None`); dropping the stream after fewer is a handheld going offline.
async fn stream(
    channel: &Channel,
    events: &[HandheldEvent],
    read: Option<usize>,
) -> Result<Vec<AttemptAck>, BoxError> {
    let (tx, rx) = mpsc::channel(events.len().max(1));
    for e in events {
        tx.send(e.clone()).await?;
    }
    drop(tx);
    let mut acks = HandheldServiceClient::new(channel.clone())
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
}

async fn drive(
    channel: Channel,
    driver: String,
    parcels: Vec<Parcel>,
    seed: u64,
    start: DateTime<Utc>,
) -> Result<DriverDay, BoxError> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let plans: Vec<(Parcel, Vec<Report>)> = parcels
        .into_iter()
        .map(|p| {
            let f = fate(seed >> 8, &p);
            (p, f)
        })
        .collect();
    let mut day = DriverDay::default();
    let mut sequence = 0;
    for round in 0..MAX_ATTEMPTS {
        let mut events = Vec::new();
        for (i, (parcel, reports)) in plans.iter().enumerate() {
            let Some(report) = reports.get(round) else {
                continue;
            };
            let at = start + Duration::hours(3 * round as i64) + Duration::minutes(4 * i as i64);
            for r in [Report::Started(AttemptStartedReport {}), report.clone()] {
                sequence += 1;
                events.push(HandheldEvent {
                    event_id: EventId::new().to_string(),
                    device_id: format!("hh-{driver}"),
                    sequence,
                    parcel_id: parcel.id.clone(),
                    driver_id: driver.clone(),
                    route_id: String::new(),
                    occurred_at: Some(timestamp(at)),
                    report: Some(r),
                });
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
            acks.extend(stream(&channel, &events, Some(cut)).await?);
            day.reconnects += 1;
            let from = cut.saturating_sub(2);
            let resent = stream(&channel, &events[from..], None).await?;
            acks.truncate(from);
            acks.extend(resent);
        } else {
            acks = stream(&channel, &events, None).await?;
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
    day(&args.server, args.date, args.seed, manifests).await
}

/// Loads `manifests` and drives their parcels for `date` against `server`,
/// then prints the report by service and by country.
pub(crate) async fn day(
    server: &str,
    date: NaiveDate,
    seed: u64,
    manifests: Vec<(String, Vec<u8>)>,
) -> Result<(), BoxError> {
    let channel = crate::connect(server).await?;
    let mut parcels = Vec::new();
    let mut new = 0;
    for (name, csv) in manifests {
        let (loaded, accepted) = load(&channel, &name, csv).await?;
        parcels.extend(loaded);
        new += accepted;
    }
    if new == 0 && !parcels.is_empty() {
        // Every parcel was in the log already: this day has been driven.
        println!("this day is already in the log; reporting it");
        parcels.clear();
    }

    // Each depot's parcels, split among its drivers, all driving at once.
    let mut by_depot: BTreeMap<(String, Country), Vec<Parcel>> = BTreeMap::new();
    for p in parcels {
        by_depot
            .entry((p.depot.clone(), p.country))
            .or_default()
            .push(p);
    }
    let mut tasks = Vec::new();
    for ((depot, country), list) in by_depot {
        let start = country
            .tz()
            .from_local_datetime(&date.and_hms_opt(8, 0, 0).unwrap_or_default())
            .earliest()
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        for (d, chunk) in list.chunks(PARCELS_PER_DRIVER).enumerate() {
            let driver = format!("{depot}-drv-{d:02}");
            let mut h = std::collections::hash_map::DefaultHasher::new();
            driver.hash(&mut h);
            let seed = seed.rotate_left(8) ^ h.finish();
            tasks.push(tokio::spawn(drive(
                channel.clone(),
                driver,
                chunk.to_vec(),
                seed,
                start,
            )));
        }
    }
    let drivers = tasks.len();
    let mut total = DriverDay::default();
    for t in tasks {
        let d = t.await??;
        total.stored += d.stored;
        total.duplicates += d.duplicates;
        total.rejected += d.rejected;
        total.reconnects += d.reconnects;
        total.last_position = total.last_position.max(d.last_position);
    }
    println!(
        "{drivers} drivers: {} events stored, {} resends answered as duplicates, {} rejected, {} handhelds reconnected",
        total.stored, total.duplicates, total.rejected, total.reconnects
    );

    let mut analytics = AnalyticsServiceClient::new(channel);
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
