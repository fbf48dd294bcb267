//! `threshold simulate`: delivery days across the four countries, driven
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
//! does): the simulated day's clock decides the windows, and stamps the
//! manifests (loaded the evening before) and the plan.
//!
//! Each parcel's fate is drawn from a generator seeded by the seed and
//! the parcel's id, so the same seed gives the same days — same parcels,
//! same outcomes, same report — whatever the timing and concurrency.
//!
//! # Days
//!
//! `--days N` plays N consecutive local dates from `--date`. A driver makes
//! one attempt per parcel and day, at its planned arrival. A parcel whose
//! attempt failed is carried over by the planner to the next delivery day:
//! that day's plan asks PlanningService to carry the previous delivery
//! day's open parcels over (`carry_over_from`), so the same parcel, under
//! the same id, is rescheduled and planned again, and its next attempt is
//! its second or third; after a third failed attempt the planner returns it
//! to its sender. A carried-over in-home parcel goes to the door: its
//! resident's window and grant were for the first day. The last day's
//! failed parcels stay where they are: their next day is not played.
//!
//! The week has the shape of a parcel carrier's: a weekday brings `--parcels`
//! new parcels, a Saturday half as many, and a Sunday none and no rounds at
//! all (parcels failed on Saturday are tried again on Monday). Dates are
//! local: a depot's shift and a resident's window are in its own zone, so a
//! range across a DST change (the last Sunday of March or October) keeps
//! every attempt within the local shift, whatever the UTC offset that day.
//!
//! # Layout
//!
//! - this module: the command's options and the day, start to end;
//! - `conn`: where the services are and the connections to them;
//! - `parcels`: the day's manifest, generated or read, and its parcels;
//! - `fates`: what the day holds for each parcel, from the seed alone;
//! - `residents`: in-home grants, issued (and revoked) before the driver comes;
//! - `routes`: the day's routes, planned by the server;
//! - `drivers`: each route driven by a handheld, and a driver's tally;
//! - `in_home`: one in-home stop, from the scan to the receipt;
//! - `devices`: the home's lock, camera and alarm, signing their events;
//! - `report`: what the day printed at its end.

mod conn;
mod devices;
mod drivers;
mod fates;
mod in_home;
mod parcels;
mod report;
mod residents;
mod routes;

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc, Weekday};
use threshold_api::v1::ClockRequest;
use threshold_api::v1::access_service_client::AccessServiceClient;
use threshold_auth::LocalTokens;

use crate::progress::{Progress, Unit};
use conn::Conn;
pub(crate) use conn::service_urls;
use drivers::{DriverDay, drive};
use parcels::{Parcel, generate, load};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Search generations per depot for a simulated day's plan.
pub(crate) const PLAN_GENERATIONS: u32 = 400;

/// Options of `threshold simulate`.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The local delivery date (the first, with --days).
    #[arg(long, default_value = "2026-11-23")]
    date: NaiveDate,
    /// Consecutive local days to play from --date: each day's failed
    /// parcels are attempted again on the next delivery day; Sundays have
    /// no deliveries.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=MAX_DAYS as i64))]
    days: u32,
    /// Parcels in a generated weekday (a Saturday has half; --manifest
    /// replaces the first day's).
    #[arg(long, default_value_t = 4000)]
    parcels: u32,
    /// Seed of the days.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Search generations per depot when planning the day's routes: the
    /// plan is repeatable, seeded with --seed, so the same seed gives the
    /// same routes and the same report on every run.
    #[arg(long, default_value_t = PLAN_GENERATIONS)]
    plan_generations: u32,
    /// Manifest files to load and drive on --date instead of a generated
    /// day (repeatable).
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
    /// For `https://` servers: a CA certificate (PEM) to trust besides the
    /// system's, e.g. a server's self-signed certificate.
    #[arg(long, env = "THRESHOLD_CA")]
    ca: Option<PathBuf>,
}

/// The most days one simulation plays: a quarter.
pub(crate) const MAX_DAYS: u32 = 92;

/// When `date`'s manifests arrive and its routes are planned on the
/// simulation's clock: the evening before at 20:00 UTC (21:00 to 23:00 local
/// in the four countries), after the day before's last stop (shifts end at
/// 18:00 local) and before the day's first grant (issued hours before a
/// window that opens at 08:00 local at the earliest). What the planner
/// writes then is stamped with it, so a parcel's history reads in order.
fn evening_before(date: NaiveDate) -> DateTime<Utc> {
    let eve = date.pred_opt().unwrap_or(date);
    eve.and_hms_opt(20, 0, 0)
        .expect("20:00 is a time of day")
        .and_utc()
}

/// A manifest to load: its name and its CSV.
pub(crate) type Manifest = (String, Vec<u8>);

/// One day of a simulated range and the manifests it brings.
pub(crate) struct Day {
    pub(crate) date: NaiveDate,
    pub(crate) manifests: Vec<Manifest>,
}

/// New parcels on `date` for a weekday volume of `parcels`: a Saturday
/// brings half, a Sunday none.
fn volume(date: NaiveDate, parcels: u32) -> u32 {
    match date.weekday() {
        Weekday::Sun => 0,
        Weekday::Sat => parcels / 2,
        _ => parcels,
    }
}

/// `count` consecutive days from `first`, each with a manifest generated
/// from `seed` for its volume, except the day of `given`, which brings
/// `given`'s manifests instead.
pub(crate) fn range(
    first: NaiveDate,
    count: u32,
    parcels: u32,
    seed: u64,
    given: Option<(NaiveDate, Vec<Manifest>)>,
) -> Result<Vec<Day>, BoxError> {
    let mut given = given;
    let mut days = Vec::new();
    for n in 0..count {
        let date = first
            .checked_add_days(Days::new(u64::from(n)))
            .ok_or_else(|| format!("{first} plus {n} days is past the calendar"))?;
        let manifests = match given.take_if(|(d, _)| *d == date) {
            Some((_, manifests)) => manifests,
            None => match volume(date, parcels) {
                0 => Vec::new(),
                n => vec![(
                    format!("simulated-{date}-seed{seed}.csv"),
                    generate(date, n, seed).into_bytes(),
                )],
            },
        };
        days.push(Day { date, manifests });
    }
    Ok(days)
}

/// `threshold simulate`: the days of `args`, against its server.
pub(crate) async fn run(args: Args) -> Result<(), BoxError> {
    let mut given = None;
    if !args.manifest.is_empty() {
        let mut manifests = Vec::new();
        for file in &args.manifest {
            let csv = tokio::fs::read(file)
                .await
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let name = file
                .file_name()
                .map_or_else(|| "manifest".into(), |n| n.to_string_lossy().into_owned());
            manifests.push((name, csv));
        }
        given = Some((args.date, manifests));
    }
    let days = range(args.date, args.days, args.parcels, args.seed, given)?;
    let tokens = LocalTokens::load(&args.data)?;
    let ca = crate::read_ca(args.ca.as_deref())?;
    play(
        &service_urls(&args.server, &args.service_url)?,
        ca.as_deref(),
        &tokens,
        args.seed,
        args.plan_generations,
        days,
    )
    .await
}

/// Plays `days` against the server at `urls`, one after the other: loads
/// each day's manifests, plans it (carrying the previous delivery day's
/// open parcels over), drives it; then prints the report over them all.
pub(crate) async fn play(
    urls: &BTreeMap<&'static str, String>,
    ca: Option<&[u8]>,
    tokens: &LocalTokens,
    seed: u64,
    plan_generations: u32,
    days: Vec<Day>,
) -> Result<(), BoxError> {
    let conn = Conn::new(urls, ca, tokens).await?;
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
    let several = days.len() > 1;
    let played =
        several.then(|| Progress::new("simulate", Unit::Items("days played"), days.len() as u64));
    // Parcels loaded and not yet delivered nor returned, by id: the next
    // delivery day's plan may carry them over.
    let mut open: HashMap<String, Parcel> = HashMap::new();
    let mut previous = None;
    let mut total = DriverDay::default();
    let mut routes = 0;
    let count = days.len();
    for day in days {
        if let Some(d) = play_day(
            &conn,
            day,
            previous,
            seed,
            plan_generations,
            &mut open,
            several,
        )
        .await?
        {
            routes += d.0;
            total.add(d.1);
            previous = Some(d.2);
        }
        if let Some(p) = &played {
            p.add(1);
        }
    }
    if let Some(p) = &played {
        p.finish(&format!("{count} days played"));
    }
    report::print(&conn, routes, &total).await
}

/// One day: its manifests loaded, its routes planned with the open parcels
/// of `previous` carried over, and driven. Returns the routes driven, the
/// drivers' tally and the date, or `None` for a day without deliveries.
async fn play_day(
    conn: &Conn,
    day: Day,
    previous: Option<NaiveDate>,
    seed: u64,
    plan_generations: u32,
    open: &mut HashMap<String, Parcel>,
    several: bool,
) -> Result<Option<(usize, DriverDay, NaiveDate)>, BoxError> {
    let Day { date, manifests } = day;
    if date.weekday() == Weekday::Sun && manifests.is_empty() {
        println!("{date} Sun: no deliveries on Sundays");
        return Ok(None);
    }
    let eve = evening_before(date);
    let mut parcels = Vec::new();
    let mut new = 0;
    for (name, csv) in manifests {
        let (loaded, accepted) = load(conn, &name, csv, eve).await?;
        parcels.extend(loaded);
        new += accepted;
    }
    if new == 0 && !parcels.is_empty() {
        // Every parcel was in the log already: this day has been driven.
        println!("{date}: this day is already in the log; reporting it");
        return Ok(Some((0, DriverDay::default(), date)));
    }
    let manifested = parcels.len();
    // Parcels of earlier days may be carried over onto this day's routes.
    parcels.extend(open.values().cloned());

    // The day's routes, planned by the server from what was loaded.
    let planning =
        (!several).then(|| Progress::waiting("simulate", &format!("planning {date}'s routes")));
    let planned = routes::plan(
        conn,
        date,
        previous,
        seed,
        plan_generations,
        parcels.clone(),
        eve + chrono::Duration::minutes(30),
    )
    .await?;
    if let Some(p) = planning {
        p.finish(&format!("{} routes planned", planned.drives.len()));
    }
    for p in parcels.into_iter().take(manifested) {
        open.insert(p.id.clone(), p);
    }
    let driven = (!several).then(|| {
        Arc::new(Progress::new(
            "simulate",
            Unit::Items("routes driven"),
            planned.drives.len() as u64,
        ))
    });
    let mut tasks = Vec::new();
    for route in planned.drives {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        route.driver.hash(&mut h);
        date.hash(&mut h);
        let driver_seed = seed.rotate_left(8) ^ h.finish();
        let driven = driven.clone();
        let conn = conn.clone();
        for (p, _) in &route.stops {
            // Driven today: settled below by how its attempt went.
            open.remove(&p.id);
        }
        tasks.push(tokio::spawn(async move {
            let day = drive(conn, route, seed, driver_seed).await;
            if let Some(d) = driven {
                d.add(1);
            }
            day
        }));
    }
    let drivers = tasks.len();
    let mut total = DriverDay::default();
    let mut tried = Vec::new();
    for t in tasks {
        let (day, parcels) = t.await??;
        tried.extend(parcels);
        total.add(day);
    }
    if let Some(d) = driven.filter(|_| drivers > 0) {
        d.finish(&format!("{drivers} routes driven"));
    }
    // A failed parcel waits for the next delivery day, at the door.
    let failed: std::collections::HashSet<&String> = total.failed.iter().collect();
    for mut p in tried {
        if failed.contains(&p.id) {
            p.attempts += 1;
            p.window = None;
            if p.attempts < threshold_planning_service::MAX_ATTEMPTS {
                open.insert(p.id.clone(), p);
            }
        }
    }
    println!(
        "{date} {}: {manifested} new parcels, {} carried over, {} returned to sender; {drivers} routes; {} delivered, {} failed",
        date.weekday(),
        planned.carried_over,
        planned.returned,
        total.delivered,
        total.failed.len(),
    );
    Ok(Some((drivers, total, date)))
}
