//! A delivery day, driven through the parcel aggregate into the log: depots
//! in the four countries, parcels around them, a share booked for in-home
//! delivery, recipients who are often not home. Every decision is made by
//! `decide` on state folded from the log and appended with the expected
//! version, as the platform's single writer would.
//!
//! The same seed gives the same day.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{NaiveDate, NaiveTime, TimeZone, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_domain::country::{date_to_proto, local_window};
use threshold_domain::parcel::{Command, Parcel};
use threshold_domain::{
    Aggregate, Country, DeviceId, DomainEvent, DriverId, EventId, ParcelId, RouteId, StreamId, pb,
};
use threshold_log::{EmbeddedLog, EmbeddedOptions, EventLog, ExpectedVersion, NewEvent, Position};

/// Options of `threshold day`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The data directory of the embedded log.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// The local delivery date.
    #[arg(long, default_value = "2026-11-23")]
    date: NaiveDate,
    /// Parcels in the day, over all depots.
    #[arg(long, default_value_t = 2000)]
    parcels: u32,
    /// Seed of the day.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Depots at real Nordic city coordinates.
const DEPOTS: &[(&str, Country, f64, f64)] = &[
    ("CPH-1", Country::Dk, 55.676, 12.568),
    ("AAR-1", Country::Dk, 56.162, 10.203),
    ("HEL-1", Country::Fi, 60.169, 24.938),
    ("TRE-1", Country::Fi, 61.498, 23.761),
    ("OSL-1", Country::No, 59.913, 10.752),
    ("BGO-1", Country::No, 60.391, 5.322),
    ("STO-1", Country::Se, 59.329, 18.068),
    ("GOT-1", Country::Se, 57.708, 11.974),
];

pub(crate) async fn run(args: Args) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let log = Arc::new(EmbeddedLog::open(&args.data, EmbeddedOptions::default())?);
    let mut tasks = Vec::new();
    for (d, depot) in DEPOTS.iter().enumerate() {
        let log = Arc::clone(&log);
        let count = args.parcels / DEPOTS.len() as u32
            + u32::from((d as u32) < args.parcels % DEPOTS.len() as u32);
        let seed = args.seed.wrapping_mul(1000).wrapping_add(d as u64);
        let date = args.date;
        tasks.push(tokio::spawn(async move {
            depot_day(&*log, *depot, date, count, seed).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    let report = report(&*log, Position::ORIGIN).await?;
    log.close().await?;
    print_report(&report, args.json);
    Ok(())
}

async fn depot_day(
    log: &dyn EventLog,
    (depot, country, lat, lon): (&str, Country, f64, f64),
    date: NaiveDate,
    parcels: u32,
    seed: u64,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let route = RouteId::new(format!("{depot}-{date}-1"))?;
    let driver = DriverId::new(format!("{depot}-drv-1"))?;
    let device = DeviceId::new(format!("{depot}-hh-1"))?;
    let tz = country.tz();
    let day_start = tz
        .from_local_datetime(&date.and_time(NaiveTime::from_hms_opt(8, 0, 0).unwrap_or_default()))
        .earliest()
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(Utc::now);
    for n in 0..parcels {
        let id = ParcelId::new(format!("{}-{depot}-{date}-{n:06}", country.code()))?;
        let in_home = rng.random_bool(0.2);
        let window = if in_home {
            let h = rng.random_range(9..17);
            Some(local_window(
                country,
                date.and_hms_opt(h, 0, 0).unwrap_or_default(),
                date.and_hms_opt(h + 2, 0, 0).unwrap_or_default(),
            )?)
        } else {
            None
        };
        let manifest = pb::ParcelManifested {
            parcel_id: id.to_string(),
            partner_id: ["nordshop", "fjallgear", "kotimarket"][rng.random_range(0..3)].into(),
            country: country.to_proto() as i32,
            depot_id: depot.into(),
            delivery_date: Some(date_to_proto(date)),
            address: Some(pb::Address {
                street: format!("Street {}", rng.random_range(1..200)),
                postal_code: format!("{:05}", rng.random_range(1000..99999)),
                city: depot.split('-').next().unwrap_or_default().into(),
                position: Some(pb::GeoPoint {
                    latitude: lat + rng.random_range(-0.1..0.1),
                    longitude: lon + rng.random_range(-0.2..0.2),
                }),
            }),
            service: if in_home {
                pb::Service::InHome
            } else {
                pb::Service::Doorstep
            } as i32,
            weight_grams: rng.random_range(100..20_000),
            in_home_window: window,
            manifest_id: format!("{depot}-{date}"),
            manifest_line: u64::from(n) + 2,
        };
        let mut commands = vec![
            Command::Manifest(Box::new(manifest)),
            Command::AssignToRoute {
                route_id: route.clone(),
                plan_version: 1,
                stop_index: n,
            },
            Command::LoadOnVan {
                route_id: route.clone(),
                driver_id: driver.clone(),
            },
        ];
        // Recipients are out about a third of the time (the Nordic ~1.5 drives per
        // parcel, with at most three tries); in-home needs nobody home.
        let mut delivered = false;
        for _attempt in 0..3 {
            let home = if in_home {
                rng.random_bool(0.97)
            } else {
                rng.random_bool(0.64)
            };
            if home {
                commands.push(Command::Deliver {
                    method: if in_home {
                        pb::DeliveryMethod::InHome
                    } else {
                        pb::DeliveryMethod::Doorstep
                    },
                    driver_id: driver.clone(),
                    device_id: device.clone(),
                    grant_id: in_home
                        .then(|| threshold_domain::GrantId::new(format!("g-{id}")))
                        .transpose()?,
                    position: None,
                });
                delivered = true;
                break;
            }
            commands.push(Command::FailAttempt {
                reason: pb::FailureReason::NotHome,
                driver_id: driver.clone(),
                device_id: device.clone(),
                note: String::new(),
            });
        }
        if !delivered {
            commands.push(Command::Return {
                reason: "three failed attempts".into(),
            });
        }
        // State comes from the log: a parcel already driven on an earlier run
        // of the same day is left as it is.
        let stream = StreamId::parcel(&id);
        let history = log.read_stream(&stream, 0, 10_000).await?;
        if !history.is_empty() {
            continue;
        }
        let mut state = Parcel::default();
        let mut version = 0;
        for (i, command) in commands.iter().enumerate() {
            let events = state.decide(command)?;
            if events.is_empty() {
                continue;
            }
            let at = day_start + chrono::Duration::minutes(i64::from(n % 480) + i as i64 * 60);
            let new: Vec<NewEvent> = events
                .iter()
                .map(|e| {
                    NewEvent::new(EventId::new(), &DomainEvent::Parcel(e.clone()), at)
                        .country(country)
                })
                .collect();
            let out = log
                .append(&stream, ExpectedVersion::Exactly(version), new)
                .await?;
            version = out.stream_version;
            for e in &events {
                state.evolve(e);
            }
        }
    }
    Ok(())
}

/// Attempts per parcel by country and booked service, folded from the whole log.
#[derive(Default)]
struct Row {
    parcels: u64,
    attempts: u64,
    first_attempt_success: u64,
    delivered: u64,
    returned: u64,
}

async fn report(
    log: &dyn EventLog,
    after: Position,
) -> Result<BTreeMap<(String, String), Row>, Box<dyn std::error::Error + Send + Sync>> {
    let mut service: std::collections::HashMap<StreamId, (String, String)> = Default::default();
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    let mut pos = after;
    loop {
        let page = log.read_all(pos, 10_000).await?;
        let Some(last) = page.last() else { break };
        pos = last.position;
        for r in page {
            let DomainEvent::Parcel(e) = r.decode()? else {
                continue;
            };
            use pb::parcel_event::Event as E;
            match e {
                E::Manifested(m) => {
                    let svc = if m.service == pb::Service::InHome as i32 {
                        "in_home"
                    } else {
                        "doorstep"
                    };
                    let key = (
                        r.event
                            .country
                            .map(|c| c.code().to_owned())
                            .unwrap_or_default(),
                        svc.to_owned(),
                    );
                    rows.entry(key.clone()).or_default().parcels += 1;
                    service.insert(r.stream.clone(), key);
                }
                E::AttemptStarted(_) => {
                    if let Some(k) = service.get(&r.stream) {
                        rows.entry(k.clone()).or_default().attempts += 1;
                    }
                }
                E::Delivered(d) => {
                    if let Some(k) = service.get(&r.stream) {
                        let row = rows.entry(k.clone()).or_default();
                        row.delivered += 1;
                        row.first_attempt_success += u64::from(d.attempt == 1);
                    }
                }
                E::Returned(_) => {
                    if let Some(k) = service.get(&r.stream) {
                        rows.entry(k.clone()).or_default().returned += 1;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(rows)
}

fn print_report(rows: &BTreeMap<(String, String), Row>, json: bool) {
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|((country, service), r)| {
                serde_json::json!({
                    "country": country, "service": service, "parcels": r.parcels,
                    "attempts": r.attempts,
                    "attempts_per_parcel": ratio(r.attempts, r.parcels),
                    "first_attempt_success_rate": ratio(r.first_attempt_success, r.parcels),
                    "delivered": r.delivered, "returned": r.returned,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "rows": out }));
        return;
    }
    println!(
        "{:<8} {:<9} {:>8} {:>9} {:>10} {:>14} {:>9}",
        "country", "service", "parcels", "attempts", "per parcel", "first-attempt", "returned"
    );
    for ((country, service), r) in rows {
        println!(
            "{country:<8} {service:<9} {:>8} {:>9} {:>10.2} {:>13.1}% {:>9}",
            r.parcels,
            r.attempts,
            ratio(r.attempts, r.parcels),
            100.0 * ratio(r.first_attempt_success, r.parcels),
            r.returned
        );
    }
}
